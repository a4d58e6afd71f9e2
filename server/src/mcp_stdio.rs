//! `gavel mcp --stdio --url URL --key KEY`: Gavel's MCP tools over stdio, for desktop
//! assistants that start a local process rather than call a URL.
//!
//! Nothing runs here but the forwarding: an MCP server on stdin/stdout whose tools are those of
//! the Gavel server at `URL` (its `/mcp`), reached with rmcp's Streamable HTTP client and the
//! caller's API key. Both ends are rmcp; this file holds no protocol of its own. Every job is
//! the remote server's, charged and recorded there. Logs go to stderr: stdout is the protocol.

use std::sync::Arc;

use anyhow::Context;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ResultType, ServerCapabilities, ServerConfig, ServerPeerInfo,
};
use rmcp::service::{Peer, RequestContext, RoleClient};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

/// The stdio server: each request goes to the remote Gavel.
struct Forward {
    remote: Peer<RoleClient>,
    info: Option<Arc<ServerPeerInfo>>,
}

impl ServerHandler for Forward {
    fn get_info(&self) -> ServerConfig {
        let remote = self.info.as_deref();
        let mut config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                remote
                    .and_then(|info| info.server_info.clone())
                    .unwrap_or_else(|| Implementation::new("gavel", env!("CARGO_PKG_VERSION"))),
            );
        if let Some(instructions) = remote.and_then(|info| info.instructions.clone()) {
            config = config.with_instructions(instructions);
        }
        config
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let request = request.map(|mut params| {
            params.meta = None;
            params
        });
        let mut listed = self.remote.list_tools(request).await.map_err(remote_error)?;
        complete(&mut listed.result_type);
        Ok(listed)
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // The local client's metadata (its progress token, its protocol version) is about
        // this hop; the remote hop carries the transport's own.
        request.meta = None;
        let mut response = self.remote.call_tool_once(request).await.map_err(remote_error)?;
        if let CallToolResponse::Complete(result) = &mut response {
            complete(&mut result.result_type);
        }
        Ok(response)
    }
}

/// The remote hop negotiates the handshake era, whose results carry no `resultType`; a local
/// client on the stateless revision requires it. rmcp strips it again for a local client of
/// the handshake era.
fn complete(result_type: &mut Option<ResultType>) {
    result_type.get_or_insert(ResultType::COMPLETE);
}

/// A failure to reach the remote server, as the local client sees it.
fn remote_error(err: rmcp::ServiceError) -> ErrorData {
    ErrorData::internal_error(format!("the Gavel server did not answer: {err}"), None)
}

/// Serves stdio until the local client closes it.
pub async fn run(url: &str, key: &str) -> anyhow::Result<()> {
    let endpoint = format!("{}/mcp", url.trim_end_matches('/').trim_end_matches("/mcp"));
    let config = StreamableHttpClientTransportConfig::with_uri(endpoint.clone()).auth_header(key);
    let remote = ()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .with_context(|| format!("could not reach Gavel's MCP endpoint at {endpoint}"))?;
    tracing::info!(%endpoint, "forwarding MCP over stdio");
    let forward = Forward { remote: remote.peer().clone(), info: remote.peer_info() };
    let local = forward.serve(rmcp::transport::stdio()).await.context("stdio")?;
    local.waiting().await.context("stdio")?;
    remote.cancel().await.ok();
    Ok(())
}
