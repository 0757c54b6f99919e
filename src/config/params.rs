//! The parameter registry: every setting Meridian understands, with redis.conf names.
//!
//! One table drives the CLI flags (`--name value`), the config file and `MERIDIAN_*` env keys,
//! `CONFIG GET/SET` and `meridian --help`, so the four can never disagree.

/// How a parameter's value is parsed and validated.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An integer in [min, max].
    Int { min: i64, max: i64 },
    /// A byte size with Redis's units (`512mb`, `1gb`, `64k`).
    Memory,
    /// `yes` or `no`.
    Bool,
    /// Free text.
    Str,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// Checked (and normalized) by the owning module's function.
    Custom(fn(&str) -> Result<String, String>),
}

/// One parameter.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    /// Can CONFIG SET change it at runtime?
    pub mutable: bool,
    pub help: &'static str,
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

/// Every parameter, in the order `meridian --help` lists them.
pub const PARAMS: &[Param] = &[
    Param { name: "port", default: "6379", kind: int(0, 65535), mutable: false, help: "TCP port for RESP clients (0 = pick a free port)" },
    Param { name: "bind", default: "127.0.0.1", kind: Kind::Str, mutable: false, help: "Addresses to listen on, space separated" },
    Param { name: "requirepass", default: "", kind: Kind::Str, mutable: true, help: "Password clients must AUTH with (empty = none)" },
    Param { name: "maxclients", default: "10000", kind: int(1, 1_000_000), mutable: true, help: "Maximum number of connected clients" },
    Param { name: "timeout", default: "0", kind: int(0, i32::MAX as i64), mutable: true, help: "Close a client idle for this many seconds (0 = never)" },
    Param { name: "proto-max-bulk-len", default: "512mb", kind: Kind::Memory, mutable: true, help: "Largest bulk string a client may send" },
    Param { name: "client-query-buffer-limit", default: "1gb", kind: Kind::Memory, mutable: true, help: "Largest unparsed input buffered per client" },
    Param { name: "client-output-buffer-limit", default: "normal 0 0 0", kind: Kind::Str, mutable: true, help: "Per-class output limits '<class> <hard> <soft> <soft-seconds>'; a client over the normal hard limit is closed (0 = none)" },
    Param { name: "hz", default: "10", kind: int(1, 500), mutable: true, help: "Background task frequency (active expiry cycles per second)" },
    Param { name: "active-expire-budget", default: "5000", kind: int(100, 10_000_000), mutable: true, help: "Entries the active expiry cycle may examine per run" },
    Param { name: "io-threads", default: "0", kind: int(0, 256), mutable: false, help: "Worker threads (0 = one per available core; 1 = single-threaded)" },
    Param { name: "databases", default: "1", kind: int(1, 1), mutable: false, help: "Number of databases (only db 0, as in cluster mode)" },
    Param { name: "node-id", default: "", kind: Kind::Str, mutable: false, help: "This node's ID, 1-16 hex digits, non-zero (empty = random at start)" },
    Param { name: "region", default: "local", kind: Kind::Str, mutable: false, help: "Name of the region this node belongs to" },
    Param { name: "max-clock-drift", default: "500", kind: int(1, i32::MAX as i64), mutable: true, help: "Milliseconds a received stamp may be ahead of the local clock before a skew alarm" },
    Param { name: "tombstone-grace", default: "5000", kind: int(0, i32::MAX as i64), mutable: true, help: "Milliseconds a deleted or expired key is kept as a tombstone (after every peer acknowledged it)" },
    Param { name: "cluster-enabled", default: "no", kind: Kind::Bool, mutable: false, help: "Run as one node of a region's hash-slot cluster (needs cluster-tls-dir)" },
    Param { name: "cluster-port", default: "0", kind: int(0, 65535), mutable: false, help: "UDP port of the node's QUIC mesh endpoint (0 = port + 10000)" },
    Param { name: "cluster-announce-ip", default: "", kind: Kind::Str, mutable: false, help: "Address peers and clients use to reach this node (empty = the first bind address)" },
    Param { name: "cluster-announce-bus-port", default: "0", kind: int(0, 65535), mutable: false, help: "Mesh port peers use to reach this node when it differs from cluster-port (NAT, relays); 0 = cluster-port" },
    Param { name: "region-announce-addr", default: "", kind: Kind::Str, mutable: false, help: "Mesh address (ip:port) the other regions use to reach this node when it differs from the announced mesh address (a WAN gateway or NAT in front of the region); empty = the announced mesh address" },
    Param { name: "region-peers", default: "", kind: Kind::Str, mutable: false, help: "Mesh addresses (host:port, space separated) of seed nodes in the other regions; one per region is enough, the rest is learned by gossip" },
    Param { name: "debug-clock-offset", default: "0", kind: int(-86_400_000, 86_400_000), mutable: false, help: "Milliseconds added to this node's physical clock (skew drills and tests; never in production)" },
    Param { name: "cluster-nodes", default: "", kind: Kind::Str, mutable: false, help: "The region's nodes in order, space separated host:port[@meshport]; the first ones are primaries, the rest replicas; a node not listed starts empty (add it with CLUSTER MEET)" },
    Param { name: "cluster-replicas", default: "0", kind: int(0, 16), mutable: false, help: "Replicas per primary in the initial layout of cluster-nodes" },
    Param { name: "cluster-slots", default: "auto", kind: Kind::Str, mutable: false, help: "Initial slots: auto (even split over the primaries) or one range list per primary, space separated, e.g. '0-8191 8192-16383'" },
    Param { name: "cluster-node-timeout", default: "1500", kind: int(100, 3_600_000), mutable: false, help: "Milliseconds without answers before a node is judged down and a replica takes over" },
    Param { name: "cluster-tls-dir", default: "", kind: Kind::Str, mutable: false, help: "Directory holding ca.pem, node.pem and node.key for the mesh's mutual TLS (made by `meridian certs`)" },
    Param { name: "maxmemory", default: "0", kind: Kind::Memory, mutable: true, help: "Evict (or refuse writes) above this many bytes of used memory (0 = no limit)" },
    Param { name: "maxmemory-policy", default: "noeviction", kind: Kind::Enum(&["noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "allkeys-sieve", "allkeys-tinylfu"]), mutable: true, help: "What to evict at maxmemory: Redis's policies, allkeys-sieve (SIEVE), or allkeys-tinylfu (TinyLFU admission: best hit ratio on skewed workloads)" },
    Param { name: "maxmemory-samples", default: "5", kind: int(1, 64), mutable: true, help: "Keys sampled per eviction by the LRU, LFU and TTL policies (more = closer to exact, slower)" },
    Param { name: "lfu-log-factor", default: "10", kind: int(0, i32::MAX as i64), mutable: true, help: "LFU counter growth: higher = more hits needed to reach the 255 ceiling" },
    Param { name: "lfu-decay-time", default: "1", kind: int(0, i32::MAX as i64), mutable: true, help: "Minutes after which an idle key's LFU counter loses one (0 = never)" },
    Param { name: "loglevel", default: "notice", kind: Kind::Enum(&["debug", "verbose", "notice", "warning", "nothing"]), mutable: true, help: "Log verbosity (RUST_LOG overrides)" },
    Param { name: "dir", default: ".", kind: Kind::Str, mutable: false, help: "Data directory for the snapshot and the append-only log (created if missing)" },
    Param { name: "dbfilename", default: "meridian.snapshot", kind: Kind::Str, mutable: false, help: "Snapshot file name inside dir" },
    Param { name: "appendfilename", default: "meridian.aof", kind: Kind::Str, mutable: false, help: "Log segment name prefix inside dir (segments are <name>.<seq>)" },
    Param { name: "appendonly", default: "no", kind: Kind::Bool, mutable: true, help: "Keep an append-only log of every change (local and replicated) in dir" },
    Param { name: "appendfsync", default: "everysec", kind: Kind::Enum(&["always", "everysec", "no"]), mutable: true, help: "When the log is fsynced: before each reply, once a second, or when the OS decides" },
    Param { name: "save", default: "", kind: Kind::Str, mutable: true, help: "Snapshot after <seconds> when at least <changes> changes happened, pairs space separated, e.g. '3600 1 300 100' (empty = only SAVE/BGSAVE)" },
    Param { name: "aof-load-truncated", default: "yes", kind: Kind::Bool, mutable: true, help: "At start, truncate a log ending in an incomplete record (with a warning) instead of refusing to start" },
    Param { name: "aof-load-corrupted", default: "no", kind: Kind::Bool, mutable: true, help: "At start, drop a log segment from a corrupted record on (with an error log) instead of refusing to start" },
    Param { name: "auto-aof-rewrite-percentage", default: "100", kind: int(0, i32::MAX as i64), mutable: true, help: "Snapshot (compacting the log) when the log grew by this percentage of the last snapshot (0 = never)" },
    Param { name: "hotkeys-k", default: "32", kind: int(1, 1024), mutable: true, help: "Keys the hot-key sketch tracks (MERIDIAN.HOTKEYS, INFO hotkeys); changing it starts the sketch over" },
    Param { name: "hotkeys-threshold", default: "100", kind: int(0, i32::MAX as i64), mutable: true, help: "Operations per second from which a top-k key is hot (replicated first; full state under repl-scope hot)" },
    Param { name: "repl-antientropy", default: "60000", kind: int(0, 86_400_000), mutable: true, help: "Milliseconds between digest comparisons of an idle replication link with its peer (anti-entropy); 0 = only when a session starts" },
    Param { name: "repl-scope", default: "* all", kind: Kind::Custom(crate::hot::scope::validate), mutable: true, help: "What ships to other regions per key pattern, first match wins: '<glob> all|hot, ...'; hot = full state while the key is hot, an invalidation while cold" },
    Param { name: "auto-aof-rewrite-min-size", default: "64mb", kind: Kind::Memory, mutable: true, help: "Log growth below which no automatic compaction happens" },
    Param { name: "tracking-table-max-keys", default: "1000000", kind: int(0, i64::MAX), mutable: true, help: "Keys the client-side caching table may hold; past it, random keys are invalidated (0 = no limit)" },
    Param { name: "admin-port", default: "auto", kind: Kind::Str, mutable: false, help: "HTTP port of the dashboard, /metrics (Prometheus), /health and /api/state: auto (= port + 1000 when port is below 31768, else none), no or -1 (none), 0 (any free port) or a port" },
    Param { name: "admin-bind", default: "", kind: Kind::Str, mutable: false, help: "Address the admin port listens on (empty = the first bind address)" },
];

pub fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Parses a Redis memory size: digits with an optional unit (b, k, kb, m, mb, g, gb).
pub fn parse_memory(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Why a value was refused (the text follows Redis's CONFIG SET messages).
pub fn validate(p: &Param, v: &str) -> Result<String, String> {
    match p.kind {
        Kind::Int { min, max } => {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| "argument couldn't be parsed into an integer".to_string())?;
            if n < min || n > max {
                return Err(format!(
                    "argument must be between {min} and {max} inclusive"
                ));
            }
            Ok(n.to_string())
        }
        Kind::Memory => parse_memory(v)
            .map(|n| n.to_string())
            .ok_or_else(|| "argument must be a memory value".to_string()),
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "yes" | "no" => Ok(v.to_ascii_lowercase()),
            _ => Err("argument must be 'yes' or 'no'".into()),
        },
        Kind::Str => Ok(v.to_string()),
        Kind::Custom(check) => check(v),
        Kind::Enum(words) => {
            let l = v.to_ascii_lowercase();
            if words.contains(&l.as_str()) {
                Ok(l)
            } else {
                Err("argument(s) must be one of the following: ".to_string() + &words.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512mb"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("12"), Some(12));
        assert_eq!(parse_memory("1xb"), None);
    }

    #[test]
    fn every_default_is_valid() {
        for p in PARAMS {
            validate(p, p.default).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }
}
