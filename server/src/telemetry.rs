//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`, with actix's HTTP/1
//! dispatcher silenced: see `DEFAULT_FILTER`).

use tracing_subscriber::EnvFilter;

/// actix-http's HTTP/1 dispatcher logs at ERROR every request head it cannot parse (a 100 KB
/// path, 200 headers, a NUL in a header) and every client that hangs up mid-response: any
/// client could fill the log with them, and none is the server's fault. It answers those
/// requests itself (400 or 431, before any of Gavel's code runs), so nothing is lost by
/// silencing it; `RUST_LOG` can bring it back.
pub const DEFAULT_FILTER: &str = "info,actix_http::h1::dispatcher=off";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second initialisation (tests) is harmless, so its error is ignored.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
