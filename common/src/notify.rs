//! Telling someone how a run ended (SPEC §8): `--on-success CMD`,
//! `--on-failure CMD` (a shell command with the run described in its
//! environment) and `--notify URL` (one JSON document POSTed per run, with a
//! Slack-compatible `text`). They run once the tool's work is done, from
//! the `main` wrapper; a hook or webhook that fails is a warning, never a
//! change of the exit code, and neither can hold the tool up for long: a
//! hook is ended after [`HOOK_TIMEOUT`], a webhook given up after
//! [`WEBHOOK_ATTEMPTS`] attempts of [`WEBHOOK_TIMEOUT`].

use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a hook may run before it is ended.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one webhook attempt may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(3);
/// Webhook attempts.
pub const WEBHOOK_ATTEMPTS: u32 = 2;

/// Where to tell, and what a tool learnt of its run along the way.
#[derive(Debug, Clone, Default)]
struct State {
    on_success: Option<String>,
    on_failure: Option<String>,
    url: Option<String>,
    action: Option<String>,
    backup: Option<String>,
    store: Option<String>,
    env: Option<String>,
    database: Option<String>,
    summary: Option<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(State::default))
}

/// The hooks and webhook from the command line (and its environment variables).
pub fn configure(on_success: Option<String>, on_failure: Option<String>, url: Option<String>) {
    with(|s| {
        s.on_success = on_success;
        s.on_failure = on_failure;
        s.url = url;
    });
}

/// What the config file sets for environment `env` (its table, else
/// `[defaults]`), where the command line set nothing.
pub fn configure_from(cfg: &crate::config::Config, env: &str) {
    let e = cfg.env(env);
    with(|s| {
        let pick =
            |own: Option<&String>, default: &Option<String>| own.or(default.as_ref()).cloned();
        if s.on_success.is_none() {
            s.on_success = pick(
                e.and_then(|e| e.on_success.as_ref()),
                &cfg.defaults.on_success,
            );
        }
        if s.on_failure.is_none() {
            s.on_failure = pick(
                e.and_then(|e| e.on_failure.as_ref()),
                &cfg.defaults.on_failure,
            );
        }
        if s.url.is_none() {
            s.url = pick(e.and_then(|e| e.notify.as_ref()), &cfg.defaults.notify);
        }
        s.env.get_or_insert_with(|| env.to_string());
    });
}

/// What a run is about; a part left `None` stays as it was.
#[derive(Debug, Clone, Copy, Default)]
pub struct About<'a> {
    /// What it does (`backup`, `verify`, `status`, ...), when not the tool's usual action.
    pub action: Option<&'a str>,
    /// The backup it took, verified or restored.
    pub backup: Option<&'a str>,
    /// The store.
    pub store: Option<&'a str>,
    /// The environment.
    pub env: Option<&'a str>,
    /// The database.
    pub database: Option<&'a str>,
}

/// Records what the run is about, as the tool learns it.
pub fn about(a: About<'_>) {
    with(|s| {
        for (slot, v) in [
            (&mut s.action, a.action),
            (&mut s.backup, a.backup),
            (&mut s.store, a.store),
            (&mut s.env, a.env),
            (&mut s.database, a.database),
        ] {
            if let Some(v) = v {
                *slot = Some(v.to_string());
            }
        }
    });
}

/// The line that sums up a successful run (the message of its notice).
pub fn summary(line: &str) {
    with(|s| s.summary = Some(line.to_string()));
}

/// One run's outcome, as hooks see it in their environment and webhooks in their JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// The tool.
    pub tool: String,
    /// What it did: `backup`, `verify`, `restore`, `prune`, `wal`, `promote`, ...
    pub action: String,
    /// `success` or `failure`.
    pub result: String,
    /// The exit code.
    pub exit_code: i32,
    /// The backup it took, verified or restored, if one.
    pub backup: Option<String>,
    /// The store, without secrets.
    pub store: Option<String>,
    /// The environment.
    pub env: Option<String>,
    /// The database.
    pub database: Option<String>,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// The error, or a summary.
    pub message: String,
    /// This host.
    pub host: String,
    /// One line for people (Slack's `text`).
    pub text: String,
}

fn default_action(tool: &str) -> &'static str {
    match tool {
        "dbsnap" => "backup",
        "dbverify" => "verify",
        "dbrestore" => "restore",
        "dbprune" => "prune",
        "walship" => "wal",
        "dbpromote" => "promote",
        _ => "run",
    }
}

/// Tells whoever was asked how the run of `tool` ended; called once, by the `main` wrapper.
pub fn finish(tool: &str, exit_code: i32, message: &str, started: Instant) {
    let s = with(|s| s.clone());
    let hook = if exit_code == 0 {
        &s.on_success
    } else {
        &s.on_failure
    };
    if hook.is_none() && s.url.is_none() {
        return;
    }
    let result = if exit_code == 0 { "success" } else { "failure" };
    let action = s
        .action
        .clone()
        .unwrap_or_else(|| default_action(tool).into());
    let duration = started.elapsed().as_secs_f64();
    let message = crate::output::redact_urls(match (message, &s.summary) {
        ("", Some(line)) => line,
        (m, _) => m,
    });
    let text = format!(
        "{tool} {action} {result}{}{}: {message} ({duration:.1}s, {})",
        s.env
            .as_deref()
            .map(|e| format!(" [{e}]"))
            .unwrap_or_default(),
        s.backup
            .as_deref()
            .map(|b| format!(" {b}"))
            .unwrap_or_default(),
        crate::fsutil::host_name()
    );
    let n = Notice {
        tool: tool.into(),
        action,
        result: result.into(),
        exit_code,
        backup: s.backup,
        store: s.store.map(|st| crate::output::redact_urls(&st)),
        env: s.env,
        database: s.database,
        duration_seconds: duration,
        message,
        host: crate::fsutil::host_name(),
        text,
    };
    if let Some(cmd) = hook {
        if let Err(e) = run_hook(cmd, &n) {
            crate::output::warn(format!("the {result} hook failed: {e}"));
        }
    }
    if let Some(url) = &s.url {
        if let Err(e) = post(url, &n) {
            crate::output::warn(format!(
                "the webhook {} was not reached: {e}",
                crate::http::origin_of(url)
            ));
        }
    }
}

fn run_hook(cmd: &str, n: &Notice) -> std::result::Result<(), String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let env = [
        ("DBSAFE_TOOL", n.tool.clone()),
        ("DBSAFE_ACTION", n.action.clone()),
        ("DBSAFE_RESULT", n.result.clone()),
        ("DBSAFE_EXIT_CODE", n.exit_code.to_string()),
        ("DBSAFE_BACKUP", opt(&n.backup)),
        ("DBSAFE_STORE", opt(&n.store)),
        ("DBSAFE_ENV", opt(&n.env)),
        ("DBSAFE_DATABASE", opt(&n.database)),
        ("DBSAFE_DURATION", format!("{:.3}", n.duration_seconds)),
        ("DBSAFE_MESSAGE", n.message.clone()),
    ];
    run_shell(cmd, &env, Some(HOOK_TIMEOUT))
}

/// Runs `cmd` with `sh -c` and `env`, waiting for it (at most `timeout`,
/// then it is ended): the hooks of a run, and dbrestore's `--before`/`--after`.
pub fn run_shell(
    cmd: &str,
    env: &[(&str, String)],
    timeout: Option<Duration>,
) -> std::result::Result<(), String> {
    let (mut child, _stopped_with_the_tool) = crate::cleanup::spawn_in_group(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            // A tool's stdout is its data (a stream, a JSON report): hooks speak on stderr.
            .stdout(std::io::stderr()),
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::Interrupted => format!("`{cmd}` was not run: interrupted"),
        _ => format!("cannot run sh: {e}"),
    })?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("`{cmd}` ended with {st}")),
            Ok(None) if timeout.is_some_and(|t| start.elapsed() > t) => {
                crate::cleanup::stop_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{cmd}` was still running after {}s and was ended",
                    timeout.unwrap_or_default().as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn post(url: &str, n: &Notice) -> std::result::Result<(), String> {
    let agent = crate::http::agent_builder()
        .map_err(|e| e.to_string())?
        .timeout_connect(WEBHOOK_TIMEOUT)
        .timeout(WEBHOOK_TIMEOUT)
        .build();
    let body = serde_json::to_string(n).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        match agent
            .post(url)
            .set("content-type", "application/json")
            .send_string(&body)
        {
            Ok(_) => return Ok(()),
            // The receiver answered: another attempt would get the same answer.
            Err(ureq::Error::Status(code, _)) => return Err(format!("HTTP {code}")),
            Err(e) => last = crate::http::failure_message(&e),
        }
        if attempt < WEBHOOK_ATTEMPTS {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    Err(crate::output::redact_urls(&last))
}
