//! Shared by the config's unit tests (and others that need a config): a minimal valid file, a
//! fixed [`Context`], and the errors of a file as `(key, line)`.

use super::defaults::Limit;
use super::{parse, Context};
use std::path::PathBuf;

pub(crate) fn ctx() -> Context {
    Context {
        config_dir: PathBuf::from("/etc/oea"),
        state_directory: None,
        user_data_dir: Some(PathBuf::from("/home/u/.local/share/oea")),
    }
}

pub(crate) const MINIMAL: &str = r#"
event_source_id = "7181537436256731137"
access_token_file = "token"

[[source]]
path = "/srv/pos"
format = "native-csv"
time_zone = "America/New_York"
currency = "USD"
shop_id = "s042"
"#;

pub(super) fn errors(text: &str) -> Vec<(String, Option<usize>)> {
    parse(text, &ctx()).unwrap_err().into_iter().map(|e| (e.key, e.line)).collect()
}

/// A duration key at its maximum is accepted; one more is an error naming the key and `line`.
/// `with(n)` is a config with the key set to `n`.
pub(super) fn check_bound(key: &str, limit: Limit, line: usize, with: impl Fn(u64) -> String) {
    if let Err(e) = parse(&with(limit.max), &ctx()) {
        panic!("{key} = {}: {e:?}", limit.max);
    }
    let e = parse(&with(limit.max + 1), &ctx()).unwrap_err();
    assert_eq!(e.len(), 1, "{key}: {e:?}");
    assert_eq!((e[0].key.as_str(), e[0].line), (key, Some(line)), "{e:?}");
    let message = format!("must be at most {} ({})", limit.max, limit.max_words);
    assert_eq!(e[0].message, message);
}
