//! What the benchmarks share: the config of a one-source agent on native CSV.

use std::path::Path;

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
