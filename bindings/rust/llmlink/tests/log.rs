//! The process-wide log callback (its own test binary: it is global).

mod common;

use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicUsize, Ordering};

use llmlink::LogLevel;

// The callback is process-wide and tests of one binary run in parallel:
// one at a time here.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn log_lines_reach_the_callback_until_it_is_cleared() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lines: Arc<Mutex<Vec<(LogLevel, String)>>> = Arc::default();
    let sink = Arc::clone(&lines);
    llmlink::set_log_callback(LogLevel::Debug, move |level, msg| {
        sink.lock().unwrap().push((level, msg.to_string()));
    });
    let (mut p, _port) = common::prompt(501);
    p.finalize();
    {
        let got = lines.lock().unwrap();
        // The engine logs its finalize at info level, naming its cluster.
        assert!(
            got.iter()
                .any(|(l, m)| *l == LogLevel::Info && m.contains("501") && m.contains("finalized")),
            "{got:?}"
        );
    }

    // A replaced callback no longer receives lines; the new one does.
    let second: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink2 = Arc::clone(&second);
    llmlink::set_log_callback(LogLevel::Info, move |_, msg| {
        sink2.lock().unwrap().push(msg.to_string())
    });
    let before = lines.lock().unwrap().len();
    let (mut p, _port) = common::prompt(502);
    p.finalize();
    assert_eq!(lines.lock().unwrap().len(), before);
    assert!(second.lock().unwrap().iter().any(|m| m.contains("502")));

    llmlink::clear_log_callback();
    let n = second.lock().unwrap().len();
    let (mut p, _port) = common::prompt(503);
    p.finalize();
    assert_eq!(second.lock().unwrap().len(), n);
}

#[test]
fn a_panicking_callback_does_not_unwind_into_c() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    llmlink::set_log_callback(LogLevel::Debug, |_, _| {
        CALLS.fetch_add(1, Ordering::SeqCst);
        panic!("this callback panics on purpose");
    });
    let (mut p, _port) = common::prompt(504);
    p.finalize();
    llmlink::clear_log_callback();
    // It ran (and panicked) more than once, and the engine went on: the
    // panic stopped at the trampoline each time.
    assert!(CALLS.load(Ordering::SeqCst) >= 2);
    let (mut p, _port) = common::prompt(505);
    p.finalize();
}
