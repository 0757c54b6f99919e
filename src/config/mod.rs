//! Configuration: embedded defaults, then a TOML file, then `MERIDIAN_*` environment variables,
//! then command-line flags — each layer read with the `config` crate and applied in that order —
//! and the live values that `CONFIG GET/SET` read and change.
//!
//! Keys use redis.conf names (`proto-max-bulk-len`); in files and env vars dashes and
//! underscores are interchangeable (`MERIDIAN_PROTO_MAX_BULK_LEN`).

pub mod params;

use params::{find, parse_memory, validate, PARAMS};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    File {
        path: String,
        source: config::ConfigError,
    },
    #[error("reading environment: {0}")]
    Env(config::ConfigError),
    #[error("unknown parameter '{0}'")]
    Unknown(String),
    #[error("invalid value for '{name}': {reason}")]
    Invalid { name: String, reason: String },
    #[error("can't set immutable config '{0}'")]
    Immutable(String),
}

/// Typed view of the settings, rebuilt whenever a value changes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub bind: Vec<String>,
    pub requirepass: Option<String>,
    pub maxclients: usize,
    pub timeout_secs: u64,
    pub proto_max_bulk_len: usize,
    pub client_query_buffer_limit: usize,
    /// Hard output limit for normal clients in bytes (0 = none).
    pub output_hard_limit: usize,
    pub hz: u64,
    pub active_expire_budget: usize,
    pub io_threads: usize,
    pub node_id: Option<u64>,
    pub region: String,
    pub max_clock_drift_ms: u64,
    /// `debug-clock-offset`: ms added to the physical clock (tests and drills).
    pub clock_offset_ms: i64,
    pub tombstone_grace_ms: u64,
    /// Bytes of used memory above which writes evict or are refused (0 = no limit).
    pub maxmemory: u64,
    /// A `maxmemory-policy` word (validated against the parameter's list).
    pub maxmemory_policy: String,
    pub maxmemory_samples: u32,
    pub lfu_log_factor: u32,
    pub lfu_decay_time: u32,
    pub cluster: ClusterSettings,
    pub persist: PersistSettings,
}

/// When the append-only log is fsynced (`appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Everysec,
    No,
}

/// The persistence parameters (`dir`, `appendonly`, `save`...).
#[derive(Debug, Clone)]
pub struct PersistSettings {
    pub dir: String,
    pub dbfilename: String,
    pub appendfilename: String,
    pub appendonly: bool,
    pub appendfsync: Fsync,
    /// Save points: (seconds, changes).
    pub save: Vec<(u64, u64)>,
    pub aof_load_truncated: bool,
    pub aof_load_corrupted: bool,
    pub auto_aof_rewrite_percentage: u64,
    pub auto_aof_rewrite_min_size: u64,
}

/// The `cluster-*` parameters as given (the cluster module parses the layout).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub enabled: bool,
    pub port: u16,
    pub announce_ip: String,
    /// Announced mesh port (0 = the bound one).
    pub announce_bus_port: u16,
    pub nodes: Vec<String>,
    /// Seed mesh addresses in the other regions.
    pub region_peers: Vec<String>,
    /// `region-announce-addr`: what the other regions dial instead of the mesh address.
    pub region_announce_addr: String,
    pub replicas: usize,
    pub slots: String,
    pub node_timeout_ms: u64,
    pub tls_dir: String,
}

/// Live configuration: canonical string values plus their typed view.
pub struct Config {
    values: RwLock<BTreeMap<&'static str, String>>,
    typed: RwLock<Arc<Settings>>,
    /// Bumped on every change, so hot paths can cache `Settings` and refresh cheaply.
    version: AtomicU64,
}

fn normalize(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('_', "-")
}

/// Reads one `config` source into normalized (name → string) pairs.
fn flatten(c: &config::Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(table) = c
        .clone()
        .try_deserialize::<BTreeMap<String, config::Value>>()
    {
        for (k, v) in table {
            if let Ok(s) = v.clone().into_string() {
                out.insert(normalize(&k), s);
            } else if let Ok(arr) = v.into_array() {
                let parts: Vec<String> = arr
                    .into_iter()
                    .filter_map(|x| x.into_string().ok())
                    .collect();
                out.insert(normalize(&k), parts.join(" "));
            }
        }
    }
    out
}

impl Config {
    /// Defaults only.
    pub fn defaults() -> Self {
        Self::layered(None, false, &[]).expect("defaults are valid")
    }

    /// Layers: defaults < file < env (`MERIDIAN_*`, if `use_env`) < `overrides` (CLI flags).
    pub fn layered(
        file: Option<&Path>,
        use_env: bool,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut values: BTreeMap<&'static str, String> = PARAMS
            .iter()
            .map(|p| (p.name, p.default.to_string()))
            .collect();
        let mut layers: Vec<BTreeMap<String, String>> = Vec::new();
        if let Some(path) = file {
            let c = config::Config::builder()
                .add_source(config::File::from(path).format(config::FileFormat::Toml))
                .build()
                .map_err(|source| ConfigError::File {
                    path: path.display().to_string(),
                    source,
                })?;
            layers.push(flatten(&c));
        }
        if use_env {
            let c = config::Config::builder()
                .add_source(config::Environment::with_prefix("MERIDIAN").prefix_separator("_"))
                .build()
                .map_err(ConfigError::Env)?;
            // The environment is a shared namespace (scripts set MERIDIAN_BIN and the like):
            // only variables naming a parameter are configuration; the rest are not ours.
            let mut env = flatten(&c);
            env.retain(|k, _| find(k).is_some());
            layers.push(env);
        }
        layers.push(
            overrides
                .iter()
                .map(|(k, v)| (normalize(k), v.clone()))
                .collect(),
        );
        for layer in layers {
            for (k, v) in layer {
                let p = find(&k).ok_or_else(|| ConfigError::Unknown(k.clone()))?;
                let v = validate(p, &v).map_err(|reason| ConfigError::Invalid {
                    name: k.clone(),
                    reason,
                })?;
                values.insert(p.name, v);
            }
        }
        let typed = Arc::new(Self::typed(&values)?);
        Ok(Config {
            values: RwLock::new(values),
            typed: RwLock::new(typed),
            version: AtomicU64::new(0),
        })
    }

    fn typed(v: &BTreeMap<&'static str, String>) -> Result<Settings, ConfigError> {
        let int = |k: &str| v[k].parse::<u64>().unwrap_or(0);
        let mem = |k: &str| parse_memory(&v[k]).unwrap_or(0) as usize;
        let node_id = match v["node-id"].as_str() {
            "" => None,
            s => Some(
                u64::from_str_radix(s, 16)
                    .ok()
                    .filter(|n| *n != 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "node-id".into(),
                        reason: "must be 1-16 hex digits and non-zero".into(),
                    })?,
            ),
        };
        Ok(Settings {
            port: int("port") as u16,
            bind: v["bind"].split_whitespace().map(str::to_string).collect(),
            requirepass: Some(v["requirepass"].clone()).filter(|s| !s.is_empty()),
            maxclients: int("maxclients") as usize,
            timeout_secs: int("timeout"),
            proto_max_bulk_len: mem("proto-max-bulk-len"),
            client_query_buffer_limit: mem("client-query-buffer-limit"),
            output_hard_limit: parse_output_limit(&v["client-output-buffer-limit"]).ok_or_else(
                || ConfigError::Invalid {
                    name: "client-output-buffer-limit".into(),
                    reason: "expected '<class> <hard> <soft> <seconds>' groups".into(),
                },
            )?,
            hz: int("hz"),
            active_expire_budget: int("active-expire-budget") as usize,
            io_threads: int("io-threads") as usize,
            node_id,
            region: v["region"].clone(),
            max_clock_drift_ms: int("max-clock-drift"),
            clock_offset_ms: v["debug-clock-offset"].parse().unwrap_or(0),
            tombstone_grace_ms: int("tombstone-grace"),
            maxmemory: parse_memory(&v["maxmemory"]).unwrap_or(0),
            maxmemory_policy: v["maxmemory-policy"].clone(),
            maxmemory_samples: int("maxmemory-samples") as u32,
            lfu_log_factor: int("lfu-log-factor") as u32,
            lfu_decay_time: int("lfu-decay-time") as u32,
            cluster: ClusterSettings {
                enabled: v["cluster-enabled"] == "yes",
                port: int("cluster-port") as u16,
                announce_ip: v["cluster-announce-ip"].clone(),
                announce_bus_port: int("cluster-announce-bus-port") as u16,
                region_announce_addr: v["region-announce-addr"].clone(),
                region_peers: v["region-peers"]
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                nodes: v["cluster-nodes"]
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                replicas: int("cluster-replicas") as usize,
                slots: v["cluster-slots"].clone(),
                node_timeout_ms: int("cluster-node-timeout"),
                tls_dir: v["cluster-tls-dir"].clone(),
            },
            persist: PersistSettings {
                dir: v["dir"].clone(),
                dbfilename: v["dbfilename"].clone(),
                appendfilename: v["appendfilename"].clone(),
                appendonly: v["appendonly"] == "yes",
                appendfsync: match v["appendfsync"].as_str() {
                    "always" => Fsync::Always,
                    "no" => Fsync::No,
                    _ => Fsync::Everysec,
                },
                save: parse_save(&v["save"]).ok_or_else(|| ConfigError::Invalid {
                    name: "save".into(),
                    reason: "expected '<seconds> <changes>' pairs".into(),
                })?,
                aof_load_truncated: v["aof-load-truncated"] == "yes",
                aof_load_corrupted: v["aof-load-corrupted"] == "yes",
                auto_aof_rewrite_percentage: int("auto-aof-rewrite-percentage"),
                auto_aof_rewrite_min_size: mem("auto-aof-rewrite-min-size") as u64,
            },
        })
    }

    /// The current typed settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.typed.read().clone()
    }

    /// Changes with every successful `set`: compare to know a cached `Settings` is stale.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// (name, value) pairs whose name matches `matches`, in table order.
    pub fn get_matching(&self, matches: impl Fn(&str) -> bool) -> Vec<(&'static str, String)> {
        let values = self.values.read();
        PARAMS
            .iter()
            .filter(|p| matches(p.name))
            .map(|p| (p.name, values[p.name].clone()))
            .collect()
    }

    /// Sets several parameters atomically: all are validated before any is applied.
    pub fn set(&self, pairs: &[(String, String)]) -> Result<Arc<Settings>, ConfigError> {
        let mut values = self.values.write();
        let mut next = values.clone();
        for (k, v) in pairs {
            let p = find(k).ok_or_else(|| ConfigError::Unknown(k.clone()))?;
            if !p.mutable {
                return Err(ConfigError::Immutable(p.name.to_string()));
            }
            let v = validate(p, v).map_err(|reason| ConfigError::Invalid {
                name: p.name.to_string(),
                reason,
            })?;
            next.insert(p.name, v);
        }
        let typed = Arc::new(Self::typed(&next)?);
        *values = next;
        *self.typed.write() = typed.clone();
        self.version.fetch_add(1, Ordering::Release);
        Ok(typed)
    }
}

/// Parses Redis's `save` value: `<seconds> <changes>` pairs, or empty.
fn parse_save(s: &str) -> Option<Vec<(u64, u64)>> {
    let nums: Vec<u64> = s
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    if !nums.len().is_multiple_of(2) {
        return None;
    }
    Some(nums.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// Extracts the normal class's hard limit from a Redis `client-output-buffer-limit` value.
fn parse_output_limit(s: &str) -> Option<usize> {
    let words: Vec<&str> = s.split_whitespace().collect();
    if !words.len().is_multiple_of(4) {
        return None;
    }
    let mut hard = 0;
    for g in words.chunks(4) {
        let h = parse_memory(g[1])?;
        parse_memory(g[2])?;
        g[3].parse::<u64>().ok()?;
        match g[0].to_ascii_lowercase().as_str() {
            "normal" => hard = h as usize,
            "replica" | "slave" | "pubsub" => {}
            _ => return None,
        }
    }
    Some(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("meridian-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("node.toml");
        std::fs::write(
            &f,
            "port = 7000\nproto_max_bulk_len = \"1mb\"\nbind = \"0.0.0.0\"\n",
        )
        .unwrap();
        let c = Config::layered(Some(&f), false, &[("port".into(), "7001".into())]).unwrap();
        let s = c.settings();
        assert_eq!(s.port, 7001, "CLI beats file");
        assert_eq!(s.proto_max_bulk_len, 1024 * 1024);
        assert_eq!(s.bind, vec!["0.0.0.0"]);
    }

    #[test]
    fn set_is_validated_and_atomic() {
        let c = Config::defaults();
        assert!(matches!(
            c.set(&[("port".into(), "1".into())]),
            Err(ConfigError::Immutable(_))
        ));
        let bad = [
            ("maxclients".into(), "5".into()),
            ("hz".into(), "abc".into()),
        ];
        assert!(c.set(&bad).is_err());
        assert_eq!(
            c.settings().maxclients,
            10000,
            "nothing applied when one value is bad"
        );
        c.set(&[("maxclients".into(), "5".into())]).unwrap();
        assert_eq!(c.settings().maxclients, 5);
    }
}
