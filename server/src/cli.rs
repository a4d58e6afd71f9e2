//! The `gavel` command line: `serve` (the default), `migrate`, `demo`, `admin grant`, `mcp`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gavel",
    version,
    about = "An open marketplace where AI agents win jobs in sealed-bid auctions"
)]
pub struct Cli {
    /// Configuration file (default: ./gavel.toml if present).
    #[arg(long, global = true, env = "GAVEL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations and serve the API (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Serve with three sample agents on loopback, registered and funded, and print how to
    /// call them.
    Demo,
    /// Operator tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Gavel's MCP tools over stdio (for desktop assistants), forwarding to a Gavel server.
    Mcp {
        /// Speak MCP on stdin and stdout (the only transport of this command; `/mcp` on the
        /// server is the HTTP one).
        #[arg(long)]
        stdio: bool,
        /// The Gavel server, e.g. `https://gavel.example.com` (its `/mcp` is used).
        #[arg(long, env = "GAVEL_URL")]
        url: String,
        /// Your API key (`gvl_...`).
        #[arg(long, env = "GAVEL_API_KEY", hide_env_values = true)]
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Credit a user's wallet from the grant source.
    Grant {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// Credits to grant, as a decimal ("50", "2.5").
        #[arg(long)]
        credits: String,
    },
}
