//! The compile cache as an operator meets it: the first load of a plugin says on stderr that it is compiling
//! (once: a second run loads the entry silently), `respawn cache ls` lists what was compiled with the plugin's
//! source, and a load refreshes an entry's last use, which is what the cap prunes by.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use respawn_host::cache::{self, COMPILE_LOG_TARGET, CacheOutcome};
use respawn_host::sources::{PluginBytes, TEST_PLUGINS_DIR};
use respawn_host::{Host, RunResources};

fn plugin(file: &str) -> PluginBytes {
    let path = Path::new(TEST_PLUGINS_DIR).join(file);
    PluginBytes::new(
        &format!("file://{}", path.display()),
        std::fs::read(&path).expect("test plugin built"),
    )
    .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("respawn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The messages of the events on the compile target, in order.
#[derive(Clone, Default)]
struct CompileLines(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl CompileLines {
    fn take(&self) -> Vec<(tracing::Level, String)> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for CompileLines {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == COMPILE_LOG_TARGET {
            let mut message = String::new();
            event.record(&mut Message(&mut message));
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// A current-thread runtime, so the load runs on this thread, under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn the_first_compile_is_announced_once_and_ls_lists_it() {
    let lines = CompileLines::default();
    let _subscriber = tracing::subscriber::set_default(lines.clone());
    let dir = scratch("compile-line");
    let cache_dir = dir.join("cache");
    let new_host =
        || Host::with_cache_dir(RunResources::new(dir.clone()), Some(cache_dir.clone())).unwrap();
    let echo = plugin("respawn_testing_echo.wasm");

    let first = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(first.compile, CacheOutcome::Compiled);
    let info: Vec<String> = lines
        .take()
        .into_iter()
        .filter(|(level, _)| *level == tracing::Level::INFO)
        .map(|(_, message)| message)
        .collect();
    assert_eq!(info.len(), 1, "one line per compile: {info:?}");
    let size = cache::format_size(echo.bytes.len() as u64);
    assert!(
        info[0].contains(&echo.source)
            && info[0].contains(&size)
            && info[0].contains("first run only"),
        "names the plugin, its size and that it happens once: {}",
        info[0]
    );

    let second = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(second.compile, CacheOutcome::Hit);
    assert_eq!(lines.take(), [], "a cached plugin loads silently");

    let hostile = plugin("respawn_testing_hostile.wasm");
    new_host().load("hostile", &hostile).await.unwrap();
    let said = lines.take();
    assert_eq!(
        said.iter()
            .filter(|(l, m)| *l == tracing::Level::INFO && m.contains(&hostile.source))
            .count(),
        1,
        "another plugin is compiled, and said, once too: {said:?}"
    );

    // What `respawn cache ls` prints: both, the newest first, each with its source.
    let listed = cache::list(&cache_dir).unwrap();
    let shown: Vec<(&str, Option<&str>)> = listed
        .iter()
        .map(|e| (e.sha256.as_str(), e.source.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [
            (hostile.sha256.as_str(), Some(hostile.source.as_str())),
            (echo.sha256.as_str(), Some(echo.source.as_str())),
        ]
    );
    assert!(listed.iter().all(|e| e.size > 0 && e.path.exists()));
    assert_eq!(listed[0].engine_key, listed[1].engine_key);

    // A hit marks its entry used now: echo, made a day old, is the most recent again after a load.
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    let echo_entry = &listed[1].path;
    std::fs::File::options()
        .write(true)
        .open(echo_entry)
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    assert_eq!(
        cache::list(&cache_dir).unwrap()[1].sha256,
        echo.sha256,
        "aged"
    );
    let third = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(third.compile, CacheOutcome::Hit);
    let relisted = cache::list(&cache_dir).unwrap();
    assert_eq!(relisted[0].sha256, echo.sha256, "refreshed by the hit");

    // `respawn cache prune --all`.
    let pruned = cache::prune(&cache_dir, 0).unwrap();
    assert_eq!((pruned.removed.len(), pruned.kept), (2, 0));
    assert!(cache::list(&cache_dir).unwrap().is_empty());
    let fourth = new_host().load("echo", &echo).await.unwrap();
    assert_eq!(fourth.compile, CacheOutcome::Compiled);
    assert_eq!(
        lines
            .take()
            .iter()
            .filter(|(l, _)| *l == tracing::Level::INFO)
            .count(),
        1,
        "after a prune the plugin is compiled, and said, again"
    );
}
