use clap::Parser;
use mlkube_server::config::{Args, Command};
use mlkube_server::{import, run, telemetry};

const EX_USAGE: i32 = 64;

/// mimalloc instead of the C library's allocator: rows are allocated on SQLite's connection
/// threads and freed on the request threads, which glibc's per-thread arenas answer with lock
/// traffic and memory they keep (docs/architecture.md, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed memory to the OS `MIMALLOC_PURGE_DELAY` milliseconds after the free (10
/// by default). Under steady load memory is freed and reused all the time, so with the default
/// each thread's heap keeps what it once touched: the SQLite benchmark peaked at 75 MB with 10
/// and 71 MB with 2 (61 MB under its log-batch load); 0 peaks at 57 MB but re-faults every page
/// of a history answer (a third fewer history reads per second); see docs/architecture.md,
/// "Performance". mimalloc reads the option from the environment as the process starts, so a
/// process started without it replaces itself, same pid and arguments, with one that has it; a
/// value already set is kept.
fn with_allocator_settings() {
    use std::os::unix::process::CommandExt;
    const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";
    const PURGE_DELAY_MS: &str = "2";
    if std::env::var_os(PURGE_DELAY).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut argv = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = argv.next() {
        command.arg0(arg0);
    }
    let err = command.args(argv).env(PURGE_DELAY, PURGE_DELAY_MS).exec();
    eprintln!(
        "mlkube-server: not restarted with {PURGE_DELAY}={PURGE_DELAY_MS} ({err}); mimalloc keeps its default"
    );
}

fn main() {
    with_allocator_settings();
    serve();
}

#[tokio::main]
async fn serve() {
    let mut args = Args::parse();
    telemetry::init(&args.log_format);
    let command = args.command.take();
    let settings = match args.resolve(|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            std::process::exit(EX_USAGE);
        }
    };
    if let Some(Command::Import(import_args)) = &command {
        let to = import_args
            .to
            .clone()
            .unwrap_or_else(|| settings.backend_store_uri.clone());
        let auth_to = import_args
            .auth_to
            .clone()
            .or_else(|| settings.auth.as_ref().map(|a| a.database_uri.clone()));
        let done = async {
            let summary = import::run(import_args, &to, &settings.default_artifact_root).await?;
            print!("{}", summary.render());
            if let Some(auth_from) = &import_args.auth_from {
                let Some(auth_to) = &auth_to else {
                    return Err(import::ImportError::Source(
                        "--auth-from needs --auth-to, or --app-name basic-auth so that the server's auth database is known"
                            .to_owned(),
                    ));
                };
                print!("{}", import::auth::run(auth_from, auth_to).await?.render());
            }
            Ok(())
        };
        if let Err(err) = done.await {
            tracing::error!(error = %err, "import failed");
            eprintln!("mlkube-server import: {err}");
            std::process::exit(1);
        }
        return;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), settings = ?settings, "starting mlkube-server");
    if let Err(err) = run(settings).await {
        let chain: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
        tracing::error!(error = %chain.join(": "), "mlkube-server failed");
        std::process::exit(1);
    }
}
