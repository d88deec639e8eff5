//! Ingest benchmark per POS format: Shopify's 79-column orders export and NRF-ARTS POSLog XML at
//! 1,000,000 line items, and a folder of 10,000 small files. Each measured run is a child process,
//! so its peak RSS (VmHWM) is its own; data is generated first and not timed.
//!
//!     cargo bench --bench formats                      # full size
//!     OEA_BENCH_ITEMS=40000 OEA_BENCH_FILES=500 cargo bench --bench formats   # quick form

use offline_events_agent::queue::Role;
use offline_events_agent::{config, intake};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ITEMS_PER_ORDER: usize = 4;

fn main() {
    match std::env::var("OEA_BENCH_PHASE").as_deref() {
        Ok("ingest") => phase_ingest(),
        _ => orchestrate(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config_text(dir: &Path, format: &str) -> String {
    format!(
        "event_source_id = \"7181537436256731137\"\naccess_token_env = \"OEA_BENCH_TOKEN\"\nqueue_path = \"{q}\"\n\
         phone_region = \"US\"\n\n[[source]]\nname = \"bench\"\npath = \"{inbox}\"\nformat = \"{format}\"\n\
         time_zone = \"America/New_York\"\ncurrency = \"USD\"\nshop_id = \"s042\"\nafter_ingest = \"keep\"\n",
        q = dir.join("queue.sqlite").display(),
        inbox = dir.join("inbox").display(),
    ) + if format == "json" { JSON_COLUMNS } else { "" }
}

/// The mapping of `json_document`'s names onto ours.
const JSON_COLUMNS: &str =
    "[source.columns]\nrecords = \"data.orders\"\norder_id = \"number\"\nevent_time = \"closed_at\"\n\
    email = \"customer.email\"\nitems = \"lines\"\ncontent_id = \"article.sku\"\ncontent_name = \"article.name\"\n\
    price = \"unit_price\"\nquantity = \"qty\"\n";

fn peak_rss_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Child: ingest every file in the inbox, in name order, into a fresh queue.
fn phase_ingest() {
    let dir = PathBuf::from(std::env::var("OEA_BENCH_DIR").unwrap());
    let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let config = config::parse(&text, &config::Context { config_dir: dir.clone(), ..Default::default() }).unwrap();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.join("inbox")).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    // Set up as the service's ingest connection is (its cap, its cache, foreign keys off).
    let mut queue = Role::Ingest.open(&config.queue_path, config.max_queue_bytes).unwrap();
    let started = Instant::now();
    let mut events = 0;
    for file in &files {
        let policy = intake::age_policy(&config, offline_events_agent::now());
        match intake::ingest::ingest_file(&mut queue, &config.sources[0], file, policy).unwrap() {
            intake::ingest::Outcome::Ingested { counts, .. } => {
                assert_eq!(counts.rejects, 0, "{}", file.display());
                events += counts.events;
            }
            other => panic!("{}: {other:?}", file.display()),
        }
    }
    println!("{events} {:.3} {}", started.elapsed().as_secs_f64(), peak_rss_kb());
}

fn run(label: &str, format: &str, dir: &Path, items: usize, expected_events: usize) {
    std::fs::write(dir.join("config.toml"), config_text(dir, format)).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("OEA_BENCH_PHASE", "ingest")
        .env("OEA_BENCH_DIR", dir)
        .env("OEA_BENCH_TOKEN", "unused")
        .output()
        .unwrap();
    assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert_eq!(f[0] as usize, expected_events, "{label}");
    println!(
        "{label}: {items} line items / {} orders in {:.2} s = {:.0} line items/s ({:.0} orders/s), peak RSS {:.1} MB",
        f[0],
        f[1],
        items as f64 / f[1],
        f[0] / f[1],
        f[2] / 1024.0
    );
}

fn fresh(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    dir
}

fn orchestrate() {
    let items = env_usize("OEA_BENCH_ITEMS", 1_000_000);
    let files = env_usize("OEA_BENCH_FILES", 10_000);
    let root = tempfile::tempdir().unwrap();
    let now = offline_events_agent::now();

    let dir = fresh(root.path(), "shopify");
    let orders = shopify(&dir.join("inbox/orders_export.csv"), items / ITEMS_PER_ORDER, now);
    let mb = std::fs::metadata(dir.join("inbox/orders_export.csv")).unwrap().len() as f64 / 1e6;
    println!("generated Shopify export: {items} rows, {mb:.0} MB");
    run("shopify-orders", "shopify-orders", &dir, items, orders);

    let dir = fresh(root.path(), "poslog");
    let transactions = poslog(&dir.join("inbox/poslog.xml"), items / ITEMS_PER_ORDER, now);
    let mb = std::fs::metadata(dir.join("inbox/poslog.xml")).unwrap().len() as f64 / 1e6;
    println!("generated POSLog batch: {transactions} transactions, {mb:.0} MB");
    run("arts-poslog", "arts-poslog", &dir, items, transactions);

    let dir = fresh(root.path(), "json");
    let records = json_document(&dir.join("inbox/export.json"), items / ITEMS_PER_ORDER, now);
    let mb = std::fs::metadata(dir.join("inbox/export.json")).unwrap().len() as f64 / 1e6;
    println!("generated JSON document: {records} orders with nested items, {mb:.0} MB");
    run("json (mapped)", "json", &dir, items, records);

    let dir = fresh(root.path(), "small-files");
    let per_file = 5;
    for f in 0..files {
        let mut out = String::from("order_id,event_time,email,content_id,price,quantity\n");
        for o in 0..per_file {
            for i in 0..2 {
                out.push_str(&format!("F{f}-{o},{},c{o}@example.com,SKU-{i},9.99,1\n", now - 3600 - o as i64));
            }
        }
        std::fs::write(dir.join(format!("inbox/export-{f:05}.csv")), out).unwrap();
    }
    println!("generated {files} small native CSV files ({per_file} orders each)");
    let started = Instant::now();
    run("small files", "native-csv", &dir, files * per_file * 2, files * per_file);
    println!(
        "small files: {files} files, {:.0} files/s including process start",
        files as f64 / started.elapsed().as_secs_f64()
    );
}

/// A Shopify orders export with the real 79-column header; the first row of an order carries the
/// order columns, continuation rows only the line item ones.
fn shopify(path: &Path, orders: usize, now: i64) -> usize {
    let header = "Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,Payment References";
    let columns: Vec<&str> = header.split(',').collect();
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "{header}").unwrap();
    for o in 0..orders {
        let when = jiff::Timestamp::from_second(now - 3600 - (o as i64 % 80_000)).unwrap();
        let local =
            when.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(-4))).strftime("%Y-%m-%d %H:%M:%S %z").to_string();
        for i in 0..ITEMS_PER_ORDER {
            let mut row: HashMap<&str, String> = HashMap::new();
            row.insert("Name", format!("#{}", 100_000 + o));
            row.insert("Created at", local.clone());
            row.insert("Lineitem quantity", (1 + i % 2).to_string());
            row.insert("Lineitem name", format!("\"Item {i}, size M\""));
            row.insert("Lineitem price", format!("{}.50", 5 + i));
            row.insert("Lineitem sku", format!("SKU-{i:04}"));
            row.insert("Vendor", "Harbor Goods".into());
            row.insert("Lineitem discount", "0.00".into());
            if i == 0 {
                row.insert("Email", format!("customer{o}@example.com"));
                row.insert("Financial Status", "paid".into());
                row.insert("Paid at", local.clone());
                row.insert("Currency", "USD".into());
                row.insert("Total", "49.68".into());
                row.insert("Subtotal", "46.00".into());
                row.insert("Taxes", "3.68".into());
                row.insert("Source", "pos".into());
                row.insert("Location", "Downtown Store".into());
                if o % 2 == 0 {
                    row.insert("Phone", format!("+1415555{:04}", o % 10_000));
                }
                row.insert("Id", (5_910_000_000_000u64 + o as u64).to_string());
            }
            let line: Vec<&str> = columns.iter().map(|c| row.get(c).map_or("", String::as_str)).collect();
            writeln!(out, "{}", line.join(",")).unwrap();
        }
    }
    out.flush().unwrap();
    orders
}

/// A POSLog 6.0 batch of sale transactions, four sale lines each.
/// A pretty-printed JSON document of orders under `data.orders`, in the export's own names (read
/// through a `columns` mapping; see `config_text`).
fn json_document(path: &Path, orders: usize, now: i64) -> usize {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "{{\n  \"meta\": {{\"exported_by\": \"bench\"}},\n  \"data\": {{\"orders\": [").unwrap();
    for o in 0..orders {
        let lines: Vec<String> = (0..ITEMS_PER_ORDER)
            .map(|i| format!("{{\"article\": {{\"sku\": \"SKU-{i}\", \"name\": \"Item {i}\"}}, \"unit_price\": \"{}.99\", \"qty\": {}}}", 10 + i, 1 + i % 2))
            .collect();
        let comma = if o + 1 < orders { "," } else { "" };
        writeln!(
            out,
            "    {{\n      \"number\": \"J{o}\",\n      \"closed_at\": {},\n      \"customer\": {{\"email\": \"c{o}@example.com\"}},\n      \"lines\": [{}]\n    }}{comma}",
            now - 3600 - (o as i64 % 80_000),
            lines.join(", ")
        )
        .unwrap();
    }
    writeln!(out, "  ]}}\n}}").unwrap();
    out.flush().unwrap();
    orders
}

fn poslog(path: &Path, transactions: usize, now: i64) -> usize {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#).unwrap();
    writeln!(out, r#"<POSLog xmlns="http://www.nrf-arts.org/IXRetail/namespace/" MajorVersion="6" MinorVersion="0">"#)
        .unwrap();
    for t in 0..transactions {
        let end = jiff::Timestamp::from_second(now - 3600 - (t as i64 % 80_000)).unwrap();
        let mut lines = String::new();
        let mut total = 0.0;
        for i in 0..ITEMS_PER_ORDER {
            let price = 10.0 + i as f64;
            let qty = 1 + i % 2;
            total += price * qty as f64;
            lines.push_str(&format!(
                "<LineItem><Sale><ItemID Name=\"Item {i}\">40063810{i:05}</ItemID><RegularSalesUnitPrice Currency=\"EUR\">{price:.3}</RegularSalesUnitPrice><ActualSalesUnitPrice Currency=\"EUR\">{price:.3}</ActualSalesUnitPrice><ExtendedAmount Currency=\"EUR\">{:.3}</ExtendedAmount><Quantity UnitOfMeasureCode=\"EA\">{qty}.0000</Quantity></Sale><SequenceNumber>{}</SequenceNumber></LineItem>",
                price * qty as f64,
                i + 1
            ));
        }
        writeln!(
            out,
            "<Transaction><BusinessUnit><UnitID>100</UnitID></BusinessUnit><WorkstationID TypeCode=\"POS\">10001</WorkstationID><SequenceNumber>{t}</SequenceNumber><RetailTransaction>{lines}<LineItem><Tender TenderType=\"Cash\" TypeCode=\"Sale\"><Amount Currency=\"EUR\">{total:.3}</Amount></Tender></LineItem><Total TotalType=\"TransactionGrandAmount\" CurrencyCode=\"EUR\">{total:.3}</Total><Customer><CustomerID>{}</CustomerID></Customer></RetailTransaction><BusinessDayDate>2026-01-01</BusinessDayDate><EndDateTime>{end}</EndDateTime></Transaction>",
            22_000_000 + t
        )
        .unwrap();
    }
    writeln!(out, "</POSLog>").unwrap();
    out.flush().unwrap();
    transactions
}
