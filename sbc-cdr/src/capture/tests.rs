use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use pcap_file::pcap::PcapReader;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sbc-capture-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn pcaps(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn packets(path: &Path) -> usize {
    let Ok(bytes) = std::fs::read(path) else { return 0 };
    let Ok(mut r) = PcapReader::new(&bytes[..]) else { return 0 };
    let mut n = 0;
    while let Some(Ok(_)) = r.next_packet() {
        n += 1;
    }
    n
}

/// Waits until `dir` holds `files` files of `per_file` packets each (the writer flushes on its
/// own schedule).
fn wait_for(dir: &Path, files: usize, per_file: usize) -> Vec<PathBuf> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let found = pcaps(dir);
        if found.len() == files && found.iter().all(|p| packets(p) == per_file) {
            return found;
        }
        assert!(Instant::now() < until, "{dir:?}: {found:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rules_match_whole_user_parts_and_trunks() {
    let rules = TargetRules::new()
        .caller("alice")
        .unwrap()
        .callee(r"\+4930\d+")
        .unwrap()
        .trunk("carrier-b");
    assert!(rules.matches_parties("alice", "bob"));
    assert!(!rules.matches_parties("malice", "bob"), "anchored: not a substring match");
    assert!(!rules.matches_parties("alice2", "bob"));
    assert!(rules.matches_parties("x", "+493012345"));
    assert!(!rules.matches_parties("x", "+4930"));
    assert!(rules.matches_trunk("carrier-b"));
    assert!(!rules.matches_trunk("carrier-a"));
    assert!(!rules.matches_parties("carrier-b", "carrier-b"));
    // Never shows what it holds.
    assert_eq!(format!("{rules:?}"), "TargetRules(3 rules)");
    let err = TargetRules::new().caller("ok").unwrap().callee("(secret").unwrap_err();
    assert_eq!(err.index, 1);
    assert!(!err.to_string().contains("secret"));
}

#[test]
fn decisions_follow_the_mode() {
    let targets = TargetRules::new().caller("alice").unwrap().trunk("t1");
    let mut config = CaptureConfig {
        intercept: Some(InterceptConfig { dir: "/x".into(), targets }),
        ..CaptureConfig::default()
    };
    assert!(!config.decide("alice", "bob").any(), "mode none captures nothing");
    assert!(!config.is_target_trunk("t1"));
    config.mode = CaptureMode::Targets;
    assert_eq!(config.decide("alice", "bob"), Decision { troubleshooting: false, intercept: true });
    assert!(!config.decide("carol", "bob").any());
    assert!(config.is_target_trunk("t1"));
    config.mode = CaptureMode::All;
    assert_eq!(config.decide("alice", "bob"), Decision { troubleshooting: true, intercept: true });
    assert_eq!(config.decide("carol", "bob"), Decision { troubleshooting: true, intercept: false });
}

#[test]
fn writer_streams_calls_into_private_files() {
    let base = scratch("calls");
    let config = CaptureConfig {
        mode: CaptureMode::All,
        dir: Some(base.join("calls")),
        intercept: Some(InterceptConfig {
            dir: base.join("li"),
            targets: TargetRules::new().caller("alice").unwrap(),
        }),
        signalling: Some(SignallingCapture {
            dir: base.join("sip"),
            rotate_bytes: 1 << 20,
            rotate_interval: Duration::from_secs(3600),
            keep: 2,
        }),
        flush_interval: Duration::from_millis(10),
        ..CaptureConfig::default()
    };
    let decide = |caller| config.decide(caller, "bob");
    let (h, thread) = CaptureHandle::start(config.clone()).unwrap();
    let (target, other) = (CallRef(1), CallRef(2));
    let now = SystemTime::now();
    h.open_call(target, now, decide("alice"));
    h.open_call(other, now, decide("carol"));
    let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    for call in [target, other] {
        h.sip(Some(call), now, a, b, Bytes::from_static(b"INVITE sip:bob@x SIP/2.0\r\n\r\n"));
        h.media(call, now, a, b, &[0x80, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]);
    }
    h.sip(None, now, a, b, Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
    // Streamed: readable before the calls end.
    wait_for(&base.join("li"), 1, 2);
    h.close_call(target, Duration::ZERO);
    h.close_call(other, Duration::from_secs(3600));
    // Late packets of a closed call are not written.
    h.media(target, now, a, b, &[0x80, 8, 0, 2, 0, 0, 0, 160, 1, 2, 3, 4]);

    let li = wait_for(&base.join("li"), 1, 2);
    wait_for(&base.join("calls"), 2, 2);
    // Every SIP message, call or not, in the rolling capture.
    wait_for(&base.join("sip"), 1, 3);
    for dir in ["calls", "li", "sip"] {
        let mode = std::fs::metadata(base.join(dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{dir}");
    }
    let mode = std::fs::metadata(&li[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(li[0].file_name().unwrap().to_string_lossy().ends_with("-0000000000000001.pcap"));
    assert_eq!(h.stats().dropped.load(Ordering::Relaxed), 0);
    // Stop closes the lingering capture too and waits for the thread.
    thread.stop();
    drop(h);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn retention_keeps_the_newest_files() {
    let base = scratch("retention");
    let config = CaptureConfig {
        mode: CaptureMode::All,
        dir: Some(base.clone()),
        retention: Retention { max_files: Some(3), max_age: None },
        flush_interval: Duration::from_millis(5),
        ..CaptureConfig::default()
    };
    let (h, thread) = CaptureHandle::start(config).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in 0..(RETENTION_EVERY_FOR_TESTS as u64) {
        h.open_call(
            CallRef(i),
            t0 + Duration::from_secs(i),
            Decision { troubleshooting: true, intercept: false },
        );
        h.close_call(CallRef(i), Duration::ZERO);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while pcaps(&base).len() != 3 {
        assert!(Instant::now() < until, "{:?}", pcaps(&base));
        std::thread::sleep(Duration::from_millis(10));
    }
    let names: Vec<String> = pcaps(&base)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let last = RETENTION_EVERY_FOR_TESTS as u64 - 1;
    assert_eq!(names[2], format!("{}-{:016x}.pcap", 1_700_000_000 + last, last));
    drop(h);
    thread.stop();
    let _ = std::fs::remove_dir_all(&base);
}

/// Retention runs every 64 closes.
const RETENTION_EVERY_FOR_TESTS: usize = 64;
