//! The config file as written: serde structs with `deny_unknown_fields`, so a misspelt key is an
//! error, and `Spanned` values where validation names the line. Nothing here checks a value.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

/// The top level of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub event_source_id: Spanned<String>,
    pub access_token_file: Option<Spanned<PathBuf>>,
    pub access_token_credential: Option<Spanned<String>>,
    pub access_token_env: Option<Spanned<String>>,
    pub access_token: Option<Spanned<String>>,
    pub api_base: Option<Spanned<String>>,
    pub proxy: Option<Spanned<String>>,
    pub queue_path: Option<PathBuf>,
    pub test_event_code: Option<Spanned<String>>,
    #[serde(default)]
    pub dry_run: bool,
    pub dry_run_output: Option<PathBuf>,
    pub phone_region: Option<Spanned<String>>,
    pub attribution_window_days: Option<Spanned<u32>>,
    pub future_tolerance_minutes: Option<Spanned<u32>>,
    pub max_queue_mb: Option<Spanned<u64>>,
    pub metrics_textfile: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
    pub log_format: Option<Spanned<String>>,
    #[serde(default)]
    pub sender: RawSender,
    #[serde(default)]
    pub event_names: BTreeMap<String, String>,
    #[serde(default)]
    pub source: Vec<RawSource>,
}

/// `[sender]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSender {
    pub batch_size: Option<Spanned<u32>>,
    pub backoff_base_ms: Option<Spanned<u64>>,
    pub backoff_max_secs: Option<Spanned<u64>>,
    pub throttle_backoff_max_secs: Option<Spanned<u64>>,
    pub connect_timeout_secs: Option<Spanned<u64>>,
    pub request_timeout_secs: Option<Spanned<u64>>,
    pub auth_retry_secs: Option<Spanned<u64>>,
    pub recovery_probe_secs: Option<Spanned<u64>>,
    pub recovery_jitter_secs: Option<Spanned<u64>>,
    pub sent_retention_days: Option<Spanned<u32>>,
}

/// One `[[source]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub name: Option<String>,
    pub path: Spanned<PathBuf>,
    pub format: Spanned<String>,
    pub extensions: Option<Vec<String>>,
    pub time_zone: Option<Spanned<String>>,
    #[serde(default)]
    pub time_formats: Vec<String>,
    pub currency: Option<Spanned<String>>,
    pub shop_id: Option<Spanned<String>>,
    pub till_id: Option<String>,
    pub decimal_separator: Option<Spanned<String>>,
    pub delimiter: Option<Spanned<String>>,
    pub quote: Option<Spanned<String>>,
    pub phone_region: Option<Spanned<String>>,
    pub after_ingest: Option<Spanned<String>>,
    pub archive_dir: Option<PathBuf>,
    pub archive_keep_days: Option<Spanned<u64>>,
    pub settle_secs: Option<Spanned<u64>>,
    pub rescan_secs: Option<Spanned<u64>>,
    pub network_poll_secs: Option<Spanned<u64>>,
    pub encoding: Option<Spanned<String>>,
    #[serde(default)]
    pub skip_staff: bool,
    #[serde(default)]
    pub in_store_only: bool,
    pub partial_refunds: Option<Spanned<String>>,
    pub date_only: Option<Spanned<String>>,
    pub consent: Option<Spanned<String>>,
    pub zero_value: Option<Spanned<String>>,
    pub require_match_key: Option<bool>,
    pub append: Option<Spanned<bool>>,
    pub append_idle_secs: Option<Spanned<u64>>,
    pub done_marker: Option<Spanned<String>>,
    #[serde(default)]
    pub follow_symlinks: bool,
    pub expect_files_within: Option<Spanned<String>>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}
