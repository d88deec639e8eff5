//! A quick property over every reader: whatever the bytes, `read` returns (orders, rejects, skips,
//! or an error for the whole file) and never panics, and neither does building the orders it
//! returns into events. The inputs are arbitrary bytes and mutations of the sample and bad-input
//! fixtures, read as every format in [`Format::ALL`]. The fuzz targets in `fuzz/` go deeper.

use super::{read, Format, ReadOptions};
use crate::event::{self, name::NameTable, pii::parse_region, SourceDefaults};
use proptest::prelude::*;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

/// Every fixture file: the POS samples and the bad-input corpus, read once.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(read_seeds)
}

fn read_seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seeds = Vec::new();
    for folder in ["pos-exports", "bad-input"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else { continue };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        paths.sort();
        seeds.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    assert!(!seeds.is_empty(), "no fixtures under {}", root.display());
    seeds
}

/// Bytes that matter to the readers: quotes, delimiters, line ends, NUL, a BOM's first byte,
/// braces and brackets, signs and separators, and invalid UTF-8.
const SPECIAL: &[u8] = b"\",;\t|\r\n\0\xEF\xFF\xFE{}[]<>/-.:+0123456789 ";

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Repeat(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(SPECIAL.to_vec());
    prop_oneof![
        (any::<usize>(), prop_oneof![special.clone(), any::<u8>()]).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), prop::collection::vec(special, 1..8)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..200, 1usize..4).prop_map(|(at, n, times)| Mutation::Repeat(at, n, times)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Set(i, b) if len > 0 => bytes[i % len] = *b,
            Mutation::Set(..) => {}
            Mutation::Insert(i, b) => {
                let i = at(*i);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i);
                bytes.drain(i..(i + n).min(len));
            }
            Mutation::Truncate(i) => bytes.truncate(at(*i)),
            Mutation::Repeat(i, n, times) => {
                let i = at(*i);
                let part = bytes[i..(i + n).min(len)].to_vec();
                for _ in 0..*times {
                    bytes.splice(i..i, part.iter().copied());
                }
            }
        }
    }
    bytes
}

fn defaults(format: Format) -> SourceDefaults {
    SourceDefaults {
        time_zone: jiff::tz::TimeZone::UTC,
        time_formats: format.default_time_formats().iter().map(|f| f.to_string()).collect(),
        currency: event::money::Currency::parse("USD"),
        shop_id: Some("s042".into()),
        till_id: Some("t1".into()),
        decimal_separator: format.default_decimal_separator(),
        phone_region: parse_region("US"),
        event_names: NameTable::default(),
    }
}

/// Read `bytes` as every format, building every order; panics are the failure.
fn read_as_every_format(bytes: &[u8]) {
    for (_, format) in Format::ALL {
        let defaults = defaults(*format);
        let _ = read(*format, bytes, &ReadOptions::default(), &mut |parsed| {
            if let super::Parsed::Order(raw) = parsed {
                let _ = event::build(&raw, &defaults);
            }
            ControlFlow::Continue(())
        });
    }
}

proptest! {
    #[test]
    fn any_bytes_are_read_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        read_as_every_format(&bytes);
    }

    #[test]
    fn mutated_fixtures_are_read_without_panicking(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 0..12),
    ) {
        let seeds = seeds();
        let bytes = mutate(seeds[seed.index(seeds.len())].clone(), &mutations);
        read_as_every_format(&bytes);
    }
}
