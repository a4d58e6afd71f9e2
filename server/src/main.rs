//! `gavel`: parse the command line, load settings, run the command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use server::cli::{AdminCommand, Cli, Command};
use server::configuration::{ResolvedSettings, Settings};
use server::data_lock::{LockError, lock_database};
use server::local_admin;
use server::startup::{Application, connect_and_migrate};
use uuid::Uuid;

#[actix_web::main]
async fn main() -> ExitCode {
    server::telemetry::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A client of a Gavel server: it needs none of this one's settings.
    if let Some(Command::Mcp { stdio, url, key }) = &cli.command {
        anyhow::ensure!(*stdio, "`gavel mcp` speaks MCP over stdio only: pass --stdio");
        return server::mcp_stdio::run(url, key).await;
    }
    let settings: ResolvedSettings = Settings::load(cli.config.as_deref())?.resolve()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings.clone()).await?;
            tracing::info!("gavel listening on http://{}:{}", settings.bind.ip(), app.port());
            app.run_until_stopped().await?;
        }
        Command::Demo => server::demo::run(settings).await?,
        Command::Migrate => {
            connect_and_migrate(&settings).await?;
            tracing::info!("migrations applied");
        }
        Command::Admin { command: AdminCommand::Grant { email, credits } } => {
            admin_grant(&settings, &email, &credits).await?;
        }
        Command::Mcp { .. } => unreachable!("handled before the settings are read"),
    }
    Ok(())
}

async fn admin_grant(
    settings: &ResolvedSettings,
    email: &str,
    credits: &str,
) -> anyhow::Result<()> {
    let amount = auction_engine::MicroCredits::parse_decimal(credits)
        .with_context(|| format!("--credits `{credits}`"))?;
    anyhow::ensure!(amount.micros() > 0, "--credits must be positive");
    // A server running on this SQLite file is the authority for money: ask it.
    let _lock = match lock_database(&settings.database_url) {
        Ok(lock) => lock,
        Err(LockError::Taken(database)) => {
            let door = local_admin::find(&database)?;
            let request = local_admin::GrantRequest {
                email: email.to_owned(),
                credits: credits.to_owned(),
                transfer_id: Uuid::now_v7(),
            };
            let reply = local_admin::grant(&door, &request).await?;
            tracing::info!(
                "granted {amount} credits to {email} through the running server; balance {} \
                 (available {})",
                reply.balance,
                reply.available
            );
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    let db = connect_and_migrate(settings).await?;
    let email = registry::Email::parse(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let user = registry::find_credentials_by_email(&db, &email)
        .await?
        .with_context(|| format!("no user with email {}", email.as_str()))?
        .user;
    registry::ledger::admin_grant(&db, user.id, amount, Uuid::now_v7(), chrono::Utc::now()).await?;
    let balance = registry::ledger::balance(&db, user.id).await?;
    tracing::info!(
        "granted {amount} credits to {}; balance {} (available {})",
        email.as_str(),
        balance.balance,
        balance.available
    );
    Ok(())
}
