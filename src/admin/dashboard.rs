//! The dashboard page served at `/` by the admin port: one self-contained HTML file (inline
//! CSS and JS, no external assets, so it works on an air-gapped host) that polls `/api/state`
//! and `/health` every second and redraws regions, nodes and roles, the slot map, replication
//! per peer region, conflicts, skew, tombstones, hot keys, memory and the hit ratio.
//!
//! The page lives in `dashboard.html` beside this file so it can be edited as HTML; it is
//! compiled into the binary.

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    #[test]
    fn page_is_self_contained() {
        let p = super::PAGE;
        assert!(p.contains("/api/state"));
        for external in ["src=\"http", "href=\"http", "@import", "//cdn"] {
            assert!(!p.contains(external), "external asset: {external}");
        }
    }
}
