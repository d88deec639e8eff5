//! What the benchmarks share: the config of a one-source agent on native CSV, and the agent
//! binary to run (`OEA_BENCH_AGENT`, else this build's) with the packaged unit's environment.

use std::path::{Path, PathBuf};

pub const SOURCE_ID: &str = "7181537436256731137";
pub const TOKEN: &str = "bench-token";

/// The config of a bench agent in `dir` (queue and `inbox` there) sending to `api_base`, with
/// `source_extra` lines added to its one `[[source]]`.
pub fn config_text(dir: &Path, api_base: &str, source_extra: &str) -> String {
    format!(
        "event_source_id = \"{SOURCE_ID}\"\naccess_token_env = \"OEA_BENCH_TOKEN\"\napi_base = \"{api_base}\"\n\
         queue_path = \"{q}\"\nphone_region = \"US\"\n\n[sender]\nrequest_timeout_secs = 60\n\n\
         [[source]]\nname = \"bench\"\npath = \"{inbox}\"\nformat = \"native-csv\"\ntime_zone = \"America/New_York\"\n\
         currency = \"USD\"\nshop_id = \"s042\"\ntill_id = \"t1\"\nsettle_secs = 1\nrescan_secs = 30\n{source_extra}",
        q = dir.join("queue.sqlite").display(),
        inbox = dir.join("inbox").display(),
    )
}

/// The agent binary to run: `OEA_BENCH_AGENT`, else this build's.
pub fn agent_binary() -> PathBuf {
    std::env::var_os("OEA_BENCH_AGENT").map_or_else(|| env!("CARGO_BIN_EXE_offline-events-agent").into(), PathBuf::from)
}

/// The `Environment=` settings of the packaged systemd unit: the agent runs here as it runs there.
pub fn unit_environment() -> Vec<(String, String)> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/offline-events-agent.service");
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
