//! Replication scope per key pattern (`repl-scope`, DESIGN.md §3): `all` ships every change of
//! a matching key to the other regions; `hot` ships full state only while the key is hot here
//! and an HLC-stamped invalidation (key + stamp, no value) otherwise.
//!
//! Rules are `"<glob> <scope>"` pairs separated by commas, first match wins, and a key no rule
//! matches is `all`: `"session:* hot, * all"`. The glob matcher is handed in by whoever parses
//! the rules (the command layer passes Redis's `stringmatchlen` rules), so this module — and
//! `repl`, which evaluates the rules — stay free of `cmd`.

/// What a matching key's changes ship to the other regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every change, full state (the default).
    All,
    /// Full state while hot, an invalidation while cold.
    Hot,
}

/// A glob matcher: `(pattern, key) -> matches`.
pub type Matcher = fn(&[u8], &[u8]) -> bool;

/// A rule list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("rule '{0}' is not '<pattern> all|hot'")]
    Rule(String),
}

/// Parsed `repl-scope` rules.
#[derive(Clone)]
pub struct ScopeRules {
    rules: Vec<(Box<[u8]>, Scope)>,
    matcher: Matcher,
}

impl std::fmt::Debug for ScopeRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.rules
                    .iter()
                    .map(|(p, s)| (String::from_utf8_lossy(p), s)),
            )
            .finish()
    }
}

/// Checks the syntax of a rule list (CONFIG SET refuses what does not parse).
pub fn validate(text: &str) -> Result<String, String> {
    ScopeRules::parse(text, |_, _| false)
        .map(|_| text.trim().to_string())
        .map_err(|e| e.to_string())
}

impl ScopeRules {
    /// Parses `"<glob> <scope>, ..."`; an empty text means every key is `all`.
    pub fn parse(text: &str, matcher: Matcher) -> Result<ScopeRules, ScopeError> {
        let mut rules = Vec::new();
        for rule in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let mut words = rule.split_whitespace();
            let (Some(pat), Some(scope), None) = (words.next(), words.next(), words.next()) else {
                return Err(ScopeError::Rule(rule.to_string()));
            };
            let scope = match scope.to_ascii_lowercase().as_str() {
                "all" => Scope::All,
                "hot" => Scope::Hot,
                _ => return Err(ScopeError::Rule(rule.to_string())),
            };
            rules.push((pat.as_bytes().into(), scope));
        }
        // Trailing `all` rules change nothing (no match is `all` too): drop them so the
        // common case — every rule `all` — costs nothing per change.
        while rules.last().is_some_and(|r| r.1 == Scope::All) {
            rules.pop();
        }
        Ok(ScopeRules { rules, matcher })
    }

    /// True when no key can be `hot` (the default): callers skip the per-key match.
    pub fn all(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scope of `key`: the first matching rule's, else `all`.
    pub fn scope_of(&self, key: &[u8]) -> Scope {
        self.rules
            .iter()
            .find(|(p, _)| (self.matcher)(p, key))
            .map_or(Scope::All, |r| r.1)
    }
}

impl Default for ScopeRules {
    fn default() -> Self {
        ScopeRules {
            rules: Vec::new(),
            matcher: |_, _| false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &[u8], k: &[u8]) -> bool {
        match p.strip_suffix(b"*") {
            Some(pre) => k.starts_with(pre),
            None => p == k,
        }
    }

    #[test]
    fn first_match_wins_and_unmatched_is_all() {
        let r = ScopeRules::parse("session:* hot, session:pinned all, * all", prefix).unwrap();
        assert_eq!(r.scope_of(b"session:42"), Scope::Hot);
        assert_eq!(r.scope_of(b"session:pinned"), Scope::Hot);
        assert_eq!(r.scope_of(b"user:1"), Scope::All);
        let r = ScopeRules::parse("session:pinned all, session:* HOT", prefix).unwrap();
        assert_eq!(r.scope_of(b"session:pinned"), Scope::All);
        assert_eq!(r.scope_of(b"session:1"), Scope::Hot);
    }

    #[test]
    fn all_rules_only_cost_nothing_and_bad_rules_are_refused() {
        assert!(ScopeRules::parse("", prefix).unwrap().all());
        assert!(ScopeRules::parse("* all", prefix).unwrap().all());
        assert!(!ScopeRules::parse("* hot", prefix).unwrap().all());
        assert!(ScopeRules::parse("session:*", prefix).is_err());
        assert!(ScopeRules::parse("a hot b", prefix).is_err());
        assert!(ScopeRules::parse("a warm", prefix).is_err());
        assert!(validate("x:* hot, * all").is_ok());
        assert!(validate("x:* tepid").is_err());
    }
}
