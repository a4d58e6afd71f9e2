//! The OpenAI Files and Batch API, as the official SDKs call it: `POST /v1/files` (multipart,
//! `purpose=batch`), `GET /v1/files/{id}[/content]`, `DELETE /v1/files/{id}`, `POST
//! /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`. Thin: parse, call
//! `crate::batches` or `registry::batches`, render. A batch's output and error files are not
//! stored: their ids (`file-out-…`, `file-err-…`) name the batch, and their content is read
//! from its lines. Reading anything here moves no credits.

use actix_multipart::Multipart;
use actix_web::{HttpResponse, web};
use auction_engine::MicroCredits;
use futures::StreamExt;
use registry::batches::{self, Batch, BatchFile, BatchStatus, LineResult, NewBatch, NewFile};
use registry::{RegistryError, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::batches::{AwardRecord, BatchEndpoint, describe, plan};
use crate::error::{ApiError, ErrorBody, OpenAiErrorBody};
use crate::routes::ListObject;
use crate::state::AppState;

/// A batch may run for 24 hours (OpenAI's one completion window).
const WINDOW_MS: i64 = 24 * 3_600 * 1_000;
/// OpenAI's metadata bounds: 16 pairs, keys up to 64 characters, values up to 512.
const MAX_METADATA_PAIRS: usize = 16;

/// What a file id names.
enum FileRef {
    Input(Uuid),
    Output(Uuid, BatchFile),
}

fn file_ref(text: &str) -> Result<FileRef, ApiError> {
    let not_found = || ApiError::NotFound { what: "file" };
    let parse = |rest: &str| Uuid::parse_str(rest).map_err(|_| not_found());
    if let Some(rest) = text.strip_prefix("file-out-") {
        return Ok(FileRef::Output(parse(rest)?, BatchFile::Output));
    }
    if let Some(rest) = text.strip_prefix("file-err-") {
        return Ok(FileRef::Output(parse(rest)?, BatchFile::Errors));
    }
    text.strip_prefix("file-").ok_or_else(not_found).and_then(parse).map(FileRef::Input)
}

fn batch_id(text: &str) -> Result<Uuid, ApiError> {
    text.strip_prefix("batch_")
        .and_then(|rest| Uuid::parse_str(rest).ok())
        .ok_or(ApiError::NotFound { what: "batch" })
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1_000)
}

impl FileObject {
    fn input(info: batches::FileInfo) -> FileObject {
        let id = format!("file-{}", info.id);
        FileObject::new(id, info.bytes, info.created_at_ms, info.filename, FilePurpose::Batch)
    }

    fn new(
        id: String,
        bytes: i64,
        created_at_ms: i64,
        filename: String,
        purpose: FilePurpose,
    ) -> FileObject {
        FileObject {
            id,
            object: FileObjectWord::File,
            bytes,
            created_at: secs(created_at_ms),
            filename,
            purpose,
            status: FileStatus::Processed,
            status_details: None,
            expires_at: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) enum FileObjectWord {
    #[serde(rename = "file")]
    File,
}

#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FilePurpose {
    /// An uploaded batch input.
    Batch,
    /// A batch's output or error file.
    BatchOutput,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileStatus {
    /// Checked and stored (Gavel checks a file whole at upload).
    Processed,
}

/// OpenAI's file object.
#[derive(Serialize, ToSchema)]
pub(crate) struct FileObject {
    /// `file-…` for an upload; `file-out-…` / `file-err-…` for a batch's output / errors.
    id: String,
    object: FileObjectWord,
    bytes: i64,
    /// Unix seconds.
    created_at: i64,
    filename: String,
    purpose: FilePurpose,
    status: FileStatus,
    status_details: Option<String>,
    expires_at: Option<i64>,
}

/// `DELETE /v1/files/{id}`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct FileDeleted {
    id: String,
    object: FileObjectWord,
    deleted: bool,
}

/// The multipart form of `POST /v1/files`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes the multipart form in /openapi.json; read field by field")]
pub(crate) struct UploadForm {
    /// `batch`.
    purpose: String,
    /// JSONL: one `{custom_id, method: "POST", url, body}` per line, up to 50,000 lines.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(post, path = "/v1/files", operation_id = "upload_file", tag = "batches", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, body = FileObject,
            links(("RetrieveFile" = (operation_id = "retrieve_file", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 408, body = OpenAiErrorBody), (status = 413, body = OpenAiErrorBody),
        (status = 422, body = OpenAiErrorBody), (status = 429, body = OpenAiErrorBody)))]
/// `POST /v1/files`: a multipart upload with `purpose=batch` and a JSONL `file`. Every line is
/// checked here; a bad file is refused whole, naming each bad line and field.
pub(crate) async fn upload(
    caller: Caller,
    state: web::Data<AppState>,
    mut form: Multipart,
) -> Result<HttpResponse, ApiError> {
    let limit = state.settings.raw.batch.max_file_bytes;
    let mut purpose: Option<String> = None;
    let mut file: Option<(String, Vec<u8>)> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|err| unreadable_form(&err))?;
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(|f| f.chars().take(255).collect::<String>());
        // `purpose` is a word; `file` is bounded by `batch.max_file_bytes`; anything else is
        // read to its end (bounded as well) and ignored.
        let cap = if name == "file" { limit } else { 1_024 };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|err| unreadable_form(&err))?;
            if bytes.len() + chunk.len() > cap {
                return Err(if name == "file" {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::validation(name, "is too long")
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "purpose" => purpose = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "file" => file = Some((filename.unwrap_or_else(|| "input.jsonl".into()), bytes)),
            _ => {}
        }
    }
    match purpose.as_deref() {
        Some("batch") => {}
        Some(other) => {
            return Err(ApiError::validation("purpose", format!("must be `batch`, not `{other}`")));
        }
        None => return Err(ApiError::validation("purpose", "is required (`batch`)")),
    }
    let (filename, bytes) = file.ok_or_else(|| ApiError::validation("file", "is required"))?;
    let content =
        String::from_utf8(bytes).map_err(|_| ApiError::validation("file", "is not UTF-8 text"))?;
    let lines = crate::batches::check_input(&content)
        .map_err(|errors| ApiError::validation("file", describe(&errors)))?;
    let now_ms = state.now().timestamp_millis();
    let info = batches::insert_file(
        &state.db,
        NewFile {
            id: Uuid::now_v7(),
            owner: caller.user_id,
            filename,
            content,
            lines: i64::try_from(lines.len()).unwrap_or(i64::MAX),
            created_at_ms: now_ms,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(FileObject::input(info)))
}

/// A multipart form that cannot be read (a field name that is not text, a broken boundary).
fn unreadable_form(err: &actix_multipart::MultipartError) -> ApiError {
    ApiError::validation("file", format!("the multipart form cannot be read: {err}"))
}

/// `GET /v1/files/{id}`.
#[utoipa::path(get, path = "/v1/files/{id}", operation_id = "retrieve_file", tag = "batches", security(("bearer" = [])),
    params(("id" = String, Path, description = "A file's id")),
    responses((status = 200, body = FileObject), (status = 401, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody)))]
pub(crate) async fn retrieve_file(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    match file_ref(&id)? {
        FileRef::Input(file) => {
            let info = batches::find_file(&state.db, caller.user_id, file)
                .await?
                .ok_or(ApiError::NotFound { what: "file" })?;
            Ok(HttpResponse::Ok().json(FileObject::input(info)))
        }
        FileRef::Output(batch, which) => {
            let found = batches::find_batch(&state.db, caller.user_id, batch)
                .await?
                .ok_or(ApiError::NotFound { what: "file" })?;
            let bytes = output_bytes(&state, caller.user_id, batch, which).await?;
            let name = match which {
                BatchFile::Output => "output",
                BatchFile::Errors => "errors",
            };
            Ok(HttpResponse::Ok().json(FileObject::new(
                id,
                bytes,
                found.finalizing_at_ms.unwrap_or(found.created_at_ms),
                format!("batch_{}_{name}.jsonl", found.id),
                FilePurpose::BatchOutput,
            )))
        }
    }
}

/// `GET /v1/files/{id}/content`: the input as uploaded, or a batch's output or error lines
/// (`OutputLine`s, one per line).
#[utoipa::path(get, path = "/v1/files/{id}/content", operation_id = "file_content", tag = "batches", security(("bearer" = [])),
    params(("id" = String, Path, description = "A file's id")),
    responses((status = 200, description = "JSONL", content_type = "application/jsonl", body = String),
        (status = 401, body = OpenAiErrorBody), (status = 404, body = OpenAiErrorBody)))]
pub(crate) async fn file_content(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match file_ref(&path)? {
        FileRef::Input(file) => {
            let content = batches::file_content(&state.db, caller.user_id, file)
                .await?
                .ok_or(ApiError::NotFound { what: "file" })?;
            Ok(HttpResponse::Ok().content_type("application/jsonl").body(content))
        }
        FileRef::Output(batch, which) => batch_file(state, caller.user_id, batch, which).await,
    }
}

/// A batch's output (or error) file as a streamed JSONL body, read page by page; 404 if the
/// owner has no such batch. The dashboard's download links answer with it too.
pub(crate) async fn batch_file(
    state: web::Data<AppState>,
    owner: UserId,
    batch: Uuid,
    which: BatchFile,
) -> Result<HttpResponse, ApiError> {
    // The first page here, so that a missing batch is a 404; the rest as it is read.
    let first = output_page(&state, owner, batch, which, 0)
        .await?
        .ok_or(ApiError::NotFound { what: "file" })?;
    let pages = futures::stream::unfold(Next::Page(first), move |next| {
        let state = state.clone();
        async move {
            let (text, last) = match next {
                Next::Page(page) => page,
                // A read failed after the status was sent: cut the body off, so the client
                // sees an error rather than a short file.
                Next::Failed(err) => return Some((Err(err), Next::Done)),
                Next::Done => return None,
            };
            let chunk = actix_web::web::Bytes::from(text);
            let next = match last {
                None => Next::Done,
                Some(after) => match output_page(&state, owner, batch, which, after).await {
                    Ok(Some(page)) => Next::Page(page),
                    Ok(None) => Next::Done,
                    Err(err) => Next::Failed(err),
                },
            };
            Some((Ok(chunk), next))
        }
    });
    Ok(HttpResponse::Ok().content_type("application/jsonl").streaming(pages))
}

/// `DELETE /v1/files/{id}`: an uploaded file (a batch made from it keeps its lines).
#[utoipa::path(delete, path = "/v1/files/{id}", operation_id = "delete_file", tag = "batches", security(("bearer" = [])),
    params(("id" = String, Path, description = "An uploaded file's id")),
    responses((status = 200, body = FileDeleted), (status = 401, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody)))]
pub(crate) async fn delete_file(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let FileRef::Input(file) = file_ref(&id)? else {
        return Err(ApiError::validation("file_id", "a batch's output files go with the batch"));
    };
    if !batches::delete_file(&state.db, caller.user_id, file).await? {
        return Err(ApiError::NotFound { what: "file" });
    }
    Ok(HttpResponse::Ok().json(FileDeleted { id, object: FileObjectWord::File, deleted: true }))
}

/// A page of a batch's output (or error) file, one JSON object per line in input order, as
/// OpenAI writes them (`{id, custom_id, response: {status_code, request_id, body}, error}`),
/// and the last line number if more may follow; `None` if the owner has no such batch.
async fn output_page(
    state: &AppState,
    owner: UserId,
    batch: Uuid,
    which: BatchFile,
    after: i64,
) -> Result<Option<(String, Option<i64>)>, ApiError> {
    let page = batches::FILE_PAGE;
    let Some(lines) = batches::batch_file_page(&state.db, owner, batch, which, after, page).await?
    else {
        return Ok(None);
    };
    let mut out = String::new();
    for line in &lines {
        out.push_str(&serde_json::to_string(&output_line(line)).map_err(ApiError::internal)?);
        out.push('\n');
    }
    let full = lines.len() as u64 == page;
    Ok(Some((out, lines.last().filter(|_| full).map(|l| l.line))))
}

/// Where the stream of a batch's file stands.
enum Next {
    Page((String, Option<i64>)),
    Failed(ApiError),
    Done,
}

/// The size of a batch's output (or error) file, read page by page.
async fn output_bytes(
    state: &AppState,
    owner: UserId,
    batch: Uuid,
    which: BatchFile,
) -> Result<i64, ApiError> {
    let mut bytes = 0_i64;
    let mut after = Some(0);
    while let Some(from) = after {
        let Some((text, last)) = output_page(state, owner, batch, which, from).await? else {
            return Err(ApiError::NotFound { what: "file" });
        };
        bytes = bytes.saturating_add(i64::try_from(text.len()).unwrap_or(i64::MAX));
        after = last;
    }
    Ok(bytes)
}

/// One line of a batch's output or error file, as OpenAI writes them.
#[derive(Serialize, ToSchema)]
pub(crate) struct OutputLine {
    /// `batch_req_…`.
    id: String,
    custom_id: String,
    /// The answer (status 200, the body the endpoint would have sent) or a refusal's status
    /// and error body; none for a line that never ran.
    response: Option<LineResponse>,
    /// Why a line has no answer.
    error: Option<LineFailure>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LineResponse {
    status_code: i64,
    /// The line's job id (`GET /v1/generation?id=`).
    request_id: Option<String>,
    body: Value,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct LineFailure {
    code: String,
    message: Option<String>,
}

fn output_line(line: &LineResult) -> OutputLine {
    let request_id = line.job_id.map(|id| id.to_string());
    let response = match (line.status_code, &line.response) {
        (Some(status_code), Some(body)) => Some(LineResponse {
            status_code,
            request_id,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        }),
        (Some(status_code), None) => Some(LineResponse {
            status_code,
            request_id,
            body: json!({"error": {"message": line.error_message, "type": "invalid_request_error", "code": line.error_code}}),
        }),
        _ => None,
    };
    let error = match (&line.response, &line.error_code) {
        (None, Some(code)) => {
            Some(LineFailure { code: code.clone(), message: line.error_message.clone() })
        }
        _ => None,
    };
    OutputLine {
        id: format!("batch_req_{}", line.id.simple()),
        custom_id: line.custom_id.clone(),
        response,
        error,
    }
}

/// `POST /v1/batches`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBatch {
    /// An uploaded file's id (`file-…`).
    input_file_id: String,
    /// `/v1/chat/completions` or `/v1/jobs`.
    endpoint: String,
    /// `24h`.
    completion_window: String,
    /// Up to 16 string pairs (keys up to 64 characters, values up to 512).
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    metadata: Option<Map<String, Value>>,
    /// OpenAI's newer option; Gavel keeps output as long as the batch.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility; outputs live as long as the batch")]
    #[schema(value_type = Option<Object>)]
    output_expires_after: Option<Value>,
    /// Gavel's extension: a batch auction.
    auction: Option<BatchAuctionBody>,
}

/// A batch auction: for `bidding_window_s` seconds the category's agents with a bid URL may
/// quote for the whole batch and replace their quote; then lines are awarded.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchAuctionBody {
    /// 1 to 3,600: open a batch auction for this long.
    #[schema(minimum = 1, maximum = 3600)]
    bidding_window_s: Option<u64>,
    /// The most any line may pay its agent (credits); a line's own lower cap still holds.
    #[schema(schema_with = crate::vocabulary::credits_schema)]
    max_price: Option<Value>,
}

/// The longest bidding window: an hour.
const MAX_BIDDING_WINDOW_S: u64 = 3_600;

#[derive(Serialize, ToSchema)]
pub(crate) enum BatchObjectWord {
    #[serde(rename = "batch")]
    Batch,
}

/// A batch's status, as OpenAI names them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BatchStatusWord {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl From<BatchStatus> for BatchStatusWord {
    fn from(status: BatchStatus) -> BatchStatusWord {
        match status {
            BatchStatus::Validating => BatchStatusWord::Validating,
            BatchStatus::Failed => BatchStatusWord::Failed,
            BatchStatus::InProgress => BatchStatusWord::InProgress,
            BatchStatus::Finalizing => BatchStatusWord::Finalizing,
            BatchStatus::Completed => BatchStatusWord::Completed,
            BatchStatus::Expired => BatchStatusWord::Expired,
            BatchStatus::Cancelling => BatchStatusWord::Cancelling,
            BatchStatus::Cancelled => BatchStatusWord::Cancelled,
        }
    }
}

/// OpenAI's `errors` of a batch that failed validation.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct BatchErrors {
    object: ListObjectWord,
    data: Vec<BatchError>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) enum ListObjectWord {
    #[serde(rename = "list")]
    List,
}

/// One problem: `line` (1-based) and `param` (the field) name where.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct BatchError {
    /// `invalid_request` or `insufficient_credits`.
    code: String,
    message: String,
    param: Option<String>,
    line: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RequestCounts {
    total: i64,
    /// Lines an agent answered.
    completed: i64,
    /// Lines that ended without an answer (failed or expired).
    failed: i64,
}

/// A batch auction, on the batch.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchAuctionView {
    /// A batch auction's deadline for bids, Unix seconds.
    bidding_until: Option<i64>,
    /// The batch-wide cap per line, in credits.
    #[schema(schema_with = crate::vocabulary::credits_schema)]
    max_price: Option<String>,
    awarded_at: Option<i64>,
    /// Once awarded: every bid and re-bid, the ranking and the lines per agent.
    record: Option<AwardRecord>,
}

/// OpenAI's batch object, with Gavel's `auction` for a batch auction.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchObject {
    /// `batch_…`.
    id: String,
    object: BatchObjectWord,
    endpoint: String,
    errors: Option<BatchErrors>,
    input_file_id: String,
    completion_window: String,
    status: BatchStatusWord,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    created_at: i64,
    in_progress_at: Option<i64>,
    expires_at: i64,
    finalizing_at: Option<i64>,
    completed_at: Option<i64>,
    failed_at: Option<i64>,
    expired_at: Option<i64>,
    cancelling_at: Option<i64>,
    cancelled_at: Option<i64>,
    request_counts: RequestCounts,
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    metadata: Option<Value>,
    /// A batch auction: its deadline for bids, and once awarded, the award's record.
    #[serde(skip_serializing_if = "Option::is_none")]
    auction: Option<BatchAuctionView>,
}

fn batch_object(batch: &Batch) -> BatchObject {
    let ended = matches!(
        batch.status,
        BatchStatus::Completed | BatchStatus::Cancelled | BatchStatus::Expired
    );
    BatchObject {
        id: format!("batch_{}", batch.id),
        object: BatchObjectWord::Batch,
        endpoint: batch.endpoint.clone(),
        errors: batch.errors.as_deref().and_then(|e| serde_json::from_str(e).ok()),
        input_file_id: format!("file-{}", batch.input_file),
        completion_window: batch.completion_window.clone(),
        status: batch.status.into(),
        output_file_id: (ended && batch.has_output).then(|| format!("file-out-{}", batch.id)),
        error_file_id: (ended && batch.has_errors).then(|| format!("file-err-{}", batch.id)),
        created_at: secs(batch.created_at_ms),
        in_progress_at: batch.in_progress_at_ms.map(secs),
        expires_at: secs(batch.expires_at_ms),
        finalizing_at: batch.finalizing_at_ms.map(secs),
        completed_at: batch.completed_at_ms.map(secs),
        failed_at: batch.failed_at_ms.map(secs),
        expired_at: batch.expired_at_ms.map(secs),
        cancelling_at: batch.cancelling_at_ms.map(secs),
        cancelled_at: batch.cancelled_at_ms.map(secs),
        request_counts: RequestCounts {
            total: batch.counts.total,
            completed: batch.counts.completed,
            failed: batch.counts.failed,
        },
        metadata: batch.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
        auction: (batch.bidding_until_ms.is_some() || batch.max_price.is_some()).then(|| {
            BatchAuctionView {
                bidding_until: batch.bidding_until_ms.map(secs),
                max_price: batch.max_price.map(|m| MicroCredits::from_micros(m).to_string()),
                awarded_at: batch.awarded_at_ms.map(secs),
                record: batch.award.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            }
        }),
    }
}

fn errors_text(data: Vec<BatchError>) -> Result<String, ApiError> {
    serde_json::to_string(&BatchErrors { object: ListObjectWord::List, data })
        .map_err(ApiError::internal)
}

#[utoipa::path(post, path = "/v1/batches", operation_id = "create_batch", tag = "batches", security(("bearer" = [])),
    request_body = CreateBatch,
    responses((status = 200, body = BatchObject,
            links(("RetrieveBatch" = (operation_id = "retrieve_batch", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = OpenAiErrorBody), (status = 401, body = OpenAiErrorBody),
        (status = 413, body = OpenAiErrorBody), (status = 415, body = OpenAiErrorBody),
        (status = 422, body = OpenAiErrorBody), (status = 429, body = OpenAiErrorBody)))]
/// `POST /v1/batches`: validates every line against the endpoint, reserves the most the lines
/// may cost in one hold on the caller's credits, and starts the batch. A batch whose lines do
/// not validate, or whose hold the caller cannot cover, is stored `failed` with OpenAI's
/// `errors` list (each bad line by number), and nothing runs or stays reserved.
pub(crate) async fn create_batch(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body: CreateBatch = serde_path_to_error::deserialize(body.into_inner()).map_err(|err| {
        let path = err.path().to_string();
        ApiError::validation(
            if path == "." { "body".into() } else { path },
            err.into_inner().to_string(),
        )
    })?;
    let endpoint = BatchEndpoint::parse(&body.endpoint).ok_or_else(|| {
        ApiError::validation("endpoint", "must be /v1/chat/completions or /v1/jobs")
    })?;
    let (window, batch_max) = match body.auction {
        None => (None, None),
        Some(BatchAuctionBody { bidding_window_s: None, max_price: None }) => {
            return Err(ApiError::validation(
                "auction",
                "needs `bidding_window_s`, `max_price` or both",
            ));
        }
        Some(auction) => {
            if let Some(window) = auction.bidding_window_s
                && !(1..=MAX_BIDDING_WINDOW_S).contains(&window)
            {
                return Err(ApiError::validation(
                    "auction.bidding_window_s",
                    format!("must be 1 to {MAX_BIDDING_WINDOW_S} seconds"),
                ));
            }
            let cap = crate::jobs::request::price("auction.max_price", auction.max_price)?;
            (auction.bidding_window_s, cap)
        }
    };
    if body.completion_window != "24h" {
        return Err(ApiError::validation("completion_window", "must be `24h`"));
    }
    let metadata = match body.metadata {
        None => None,
        Some(map) => {
            if map.len() > MAX_METADATA_PAIRS {
                return Err(ApiError::validation("metadata", "has more than 16 pairs"));
            }
            for (key, value) in &map {
                let ok = key.chars().count() <= 64
                    && value.as_str().is_some_and(|v| v.chars().count() <= 512);
                if !ok {
                    return Err(ApiError::validation(
                        format!("metadata.{key}"),
                        "keys are at most 64 characters, values strings of at most 512",
                    ));
                }
            }
            Some(Value::Object(map).to_string())
        }
    };
    let FileRef::Input(file) = file_ref(&body.input_file_id)
        .map_err(|_| ApiError::validation("input_file_id", "no such file"))?
    else {
        return Err(ApiError::validation(
            "input_file_id",
            "is a batch's output, not an input file",
        ));
    };
    let content = batches::file_content(&state.db, caller.user_id, file)
        .await?
        .ok_or_else(|| ApiError::validation("input_file_id", "no such file"))?;
    let now_ms = state.now().timestamp_millis();
    let id = Uuid::now_v7();
    let mut batch = NewBatch {
        id,
        owner: caller.user_id,
        api_key: caller.api_key(),
        input_file: file,
        endpoint: endpoint.as_str().into(),
        metadata,
        status: BatchStatus::InProgress,
        errors: None,
        total: 0,
        reserved: 0,
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(WINDOW_MS),
        auction: None,
        max_price: batch_max.map(MicroCredits::micros),
    };
    let mut rfq = None;
    let lines = match plan(&state, caller.user_id, endpoint, &content, batch_max).await {
        Ok(planned) => {
            batch.total = i64::try_from(planned.lines.len()).unwrap_or(i64::MAX);
            batch.reserved = planned.max_cost.micros();
            if let Some(window) = window {
                if planned.categories.len() != 1 {
                    return Err(ApiError::validation(
                        "auction",
                        "a batch auction needs every line in one category",
                    ));
                }
                let category = planned.categories.iter().next().cloned().unwrap_or_default();
                let until =
                    now_ms.saturating_add(i64::try_from(window * 1_000).unwrap_or(i64::MAX));
                batch.auction = Some((category.clone(), until));
                rfq = Some(crate::batches::Rfq {
                    batch: id,
                    owner: caller.user_id,
                    category,
                    lines: planned.lines.len(),
                    tokens: planned.tokens,
                    deadline_ms: until,
                });
            }
            planned.lines
        }
        Err(errors) => {
            batch.status = BatchStatus::Failed;
            let data = errors
                .into_iter()
                .map(|e| BatchError {
                    code: "invalid_request".into(),
                    message: e.message,
                    param: Some(e.field),
                    line: (e.line > 0).then_some(e.line),
                })
                .collect();
            batch.errors = Some(errors_text(data)?);
            Vec::new()
        }
    };
    // The batch and its one hold: the most every line may cost, reserved in the same step.
    match state.bank.create_batch(batch.clone(), lines).await {
        Ok(()) => {}
        Err(RegistryError::InsufficientCredits { requested, available }) => {
            rfq = None;
            batch.status = BatchStatus::Failed;
            batch.reserved = 0;
            batch.errors = Some(errors_text(vec![BatchError {
                code: "insufficient_credits".into(),
                message: format!(
                    "the batch may cost up to {requested} credits; {available} are available"
                ),
                param: None,
                line: None,
            }])?);
            state.bank.create_batch(batch, Vec::new()).await?;
        }
        Err(err) => return Err(err.into()),
    }
    if let Some(rfq) = rfq {
        let state = state.clone();
        tokio::spawn(async move { crate::batches::request_quotes(&state, rfq).await });
    }
    state.batch_wake.notify_one();
    let stored = batches::find_batch(&state.db, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound { what: "batch" })?;
    Ok(HttpResponse::Ok().json(batch_object(&stored)))
}

/// `GET /v1/batches/{id}`.
#[utoipa::path(get, path = "/v1/batches/{id}", operation_id = "retrieve_batch", tag = "batches", security(("bearer" = [])),
    params(("id" = String, Path, description = "A batch's id")),
    responses((status = 200, body = BatchObject), (status = 401, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody)))]
pub(crate) async fn retrieve_batch(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = batch_id(&path)?;
    let batch = batches::find_batch(&state.db, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound { what: "batch" })?;
    Ok(HttpResponse::Ok().json(batch_object(&batch)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// A batch id: list the ones created before it.
    after: Option<String>,
    /// 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
}

/// A page of batches, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchList {
    object: ListObject,
    first_id: Option<String>,
    last_id: Option<String>,
    has_more: bool,
    data: Vec<BatchObject>,
}

/// `GET /v1/batches?after=&limit=`: newest first, 20 by default, 1 to 100.
#[utoipa::path(get, path = "/v1/batches", operation_id = "list_batches", tag = "batches", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = BatchList), (status = 400, body = OpenAiErrorBody),
        (status = 401, body = OpenAiErrorBody), (status = 422, body = OpenAiErrorBody)))]
pub(crate) async fn list_batches(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation("limit", "must be 1 to 100"));
    }
    let after = match &query.after {
        Some(text) => {
            Some(batch_id(text).map_err(|_| ApiError::validation("after", "is not a batch id"))?)
        }
        None => None,
    };
    let mut listed = batches::list_batches(&state.db, caller.user_id, after, limit + 1).await?;
    let has_more = listed.len() as u64 > limit;
    listed.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let data: Vec<BatchObject> = listed.iter().map(batch_object).collect();
    Ok(HttpResponse::Ok().json(BatchList {
        object: ListObject::List,
        first_id: data.first().map(|b| b.id.clone()),
        last_id: data.last().map(|b| b.id.clone()),
        has_more,
        data,
    }))
}

/// `POST /v1/batches/{id}/cancel`: unstarted lines are cancelled and what the batch reserved
/// for them is freed at once; running lines finish; cancelling again changes nothing.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", operation_id = "cancel_batch", tag = "batches", security(("bearer" = [])),
    params(("id" = String, Path, description = "A batch's id")),
    responses((status = 200, body = BatchObject), (status = 401, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody)))]
pub(crate) async fn cancel_batch(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = batch_id(&path)?;
    let now_ms = state.now().timestamp_millis();
    let batch = state
        .bank
        .cancel_batch(caller.user_id, id, now_ms)
        .await?
        .ok_or(ApiError::NotFound { what: "batch" })?;
    Ok(HttpResponse::Ok().json(batch_object(&batch)))
}

/// A bid in a batch auction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BidBody {
    /// The bidding agent's id; the caller must own it.
    agent_id: Uuid,
    /// Per line, in credits (a decimal string or a number).
    #[schema(value_type = String)]
    price: Value,
    /// The most lines the agent takes (a positive whole number); absent: no limit.
    #[schema(value_type = Option<i64>, minimum = 1)]
    capacity: Option<Value>,
}

/// A bid recorded: its version (1 for the answer to the request for quote, then one more per
/// re-bid).
#[derive(Serialize, ToSchema)]
pub(crate) struct BidAccepted {
    batch_id: String,
    agent_id: Uuid,
    version: i64,
    price: String,
    capacity: Option<i64>,
}

/// `POST /api/batches/{id}/bids`: an agent's owner replaces the agent's bid in a batch
/// auction, until the deadline (409 `bidding_closed` after it: a late bid never reaches the
/// award). Bids are sealed: nobody sees another agent's bid before the award.
#[utoipa::path(post, path = "/api/batches/{id}/bids", operation_id = "bid_on_batch", tag = "batches", security(("bearer" = [])),
    params(("id" = String, Path, description = "A batch auction's id")),
    request_body = BidBody,
    responses((status = 200, body = BidAccepted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn bid(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let batch = batch_id(&path)?;
    let body: BidBody = crate::input::parse_body(body.into_inner())?;
    let quote = json!({"price": body.price, "capacity": body.capacity});
    let (price, capacity) = crate::batches::parse_quote(&quote).ok_or_else(|| {
        ApiError::validation(
            "price",
            "must be a non-negative price in credits, capacity a positive count",
        )
    })?;
    let auction = batches::batch_auction(&state.db, batch)
        .await?
        .ok_or(ApiError::NotFound { what: "batch auction" })?;
    let now = state.now();
    let snapshot = state.agent_index.snapshot(&state.db, now.timestamp_millis()).await?;
    // Only an agent its owner holds, that serves the category and may see the batch, bids.
    let agent = snapshot
        .by_id(body.agent_id)
        .filter(|a| a.owner_id == caller.user_id)
        .ok_or(ApiError::NotFound { what: "agent" })?;
    let eligible = agent.categories.contains(&auction.category)
        && agent.state == registry::agents::AgentState::Active
        && (agent.visibility == registry::agents::Visibility::Public
            || agent.owner_id == auction.owner);
    if !eligible {
        return Err(ApiError::validation(
            "agent_id",
            "the agent does not compete in this batch's category",
        ));
    }
    let bid = batches::BatchBid {
        agent: agent.id,
        owner: caller.user_id,
        version: 0,
        price: price.micros(),
        capacity,
        source: batches::BidSource::Rebid,
        at_ms: now.timestamp_millis(),
    };
    let Some(version) = batches::record_bid(&state.db, batch, bid).await? else {
        return Err(ApiError::Conflict {
            code: "bidding_closed",
            message: "the batch's bidding window has closed".into(),
        });
    };
    Ok(HttpResponse::Ok().json(BidAccepted {
        batch_id: format!("batch_{batch}"),
        agent_id: agent.id,
        version,
        price: price.to_string(),
        capacity,
    }))
}
