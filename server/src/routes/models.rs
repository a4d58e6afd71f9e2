//! `GET /v1/models` and `GET /v1/models/{id}`: the OpenAI model list and one model. Every
//! public agent is a model (`id` = its slug), plus the virtual models `auction` and
//! `auction/<category>` for each category in use; any other id is OpenAI's 404
//! `model_not_found`.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::MaybeCaller;
use crate::error::{ApiError, OpenAiErrorBody};
use crate::routes::ListObject;
use crate::routes::agents::{PricingView, ReputationView, status_word};
use crate::state::AppState;
use crate::vocabulary::AgentStatusWord;

#[derive(Serialize, ToSchema)]
pub(crate) enum ModelObject {
    #[serde(rename = "model")]
    Model,
}

/// An OpenAI model: a virtual `auction` model, or a public agent (with its marketplace
/// details).
#[derive(Serialize, ToSchema)]
pub(crate) struct Model {
    id: String,
    object: ModelObject,
    /// Unix seconds; 0 for the virtual models.
    created: i64,
    /// `gavel` for the virtual models, else the owner's handle.
    owned_by: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    categories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<PricingView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AgentStatusWord>)]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reputation: Option<ReputationView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    object: ListObject,
    data: Vec<Model>,
}

/// `GET /v1/models`.
#[utoipa::path(get, path = "/v1/models", operation_id = "list_models", tag = "v1", security((), ("bearer" = [])),
    responses((status = 200, body = ModelList), (status = 401, body = OpenAiErrorBody)))]
pub(crate) async fn list(
    _caller: MaybeCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let data = models(&state).await?;
    Ok(HttpResponse::Ok().json(ModelList { object: ListObject::List, data }))
}

/// `GET /v1/models/{id}`; slugs hold a `/`, so the id is the rest of the path.
#[utoipa::path(get, path = "/v1/models/{id}", operation_id = "retrieve_model", tag = "v1", security((), ("bearer" = [])),
    params(("id" = String, Path, description = "`auction`, `auction/<category>` or an agent's slug")),
    responses((status = 200, body = Model), (status = 401, body = OpenAiErrorBody), (status = 404, body = OpenAiErrorBody)))]
pub(crate) async fn retrieve(
    _caller: MaybeCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    models(&state)
        .await?
        .into_iter()
        .find(|model| model.id == id)
        .map(|model| HttpResponse::Ok().json(model))
        .ok_or_else(|| ApiError::ModelNotFound { model: id.chars().take(200).collect() })
}

/// Every model, in the list's order: `auction`, `auction/<category>`, then agents by slug.
async fn models(state: &AppState) -> Result<Vec<Model>, ApiError> {
    let now = state.now();
    let snapshot = state.agent_index.snapshot(&state.db, now.timestamp_millis()).await?;
    let params = state.auction_parameters();
    let mut data =
        vec![virtual_model("auction", "The best agent for the job, by sealed-bid auction")];
    for category in snapshot.public_categories() {
        data.push(virtual_model(
            &format!("auction/{category}"),
            &format!("The best {category} agent for the job, by sealed-bid auction"),
        ));
    }
    let mut public: Vec<_> = snapshot
        .agents()
        .iter()
        .filter(|agent| agent.visibility == registry::agents::Visibility::Public)
        .collect();
    public.sort_by(|a, b| a.slug.cmp(&b.slug));
    for agent in public {
        let owner = agent.slug.split('/').next().unwrap_or_default();
        data.push(Model {
            id: agent.slug.clone(),
            object: ModelObject::Model,
            created: agent.created_at.timestamp(),
            owned_by: owner.to_owned(),
            description: agent.description.clone(),
            name: Some(agent.name.clone()),
            categories: Some(agent.categories.clone()),
            pricing: Some(PricingView::new(&agent.pricing)),
            context_length: agent.context_length,
            features: Some(agent.features.clone()),
            status: Some(status_word(state, agent)),
            reputation: Some(ReputationView::new(agent, &params, now.timestamp_millis())),
        });
    }
    Ok(data)
}

fn virtual_model(id: &str, description: &str) -> Model {
    Model {
        id: id.to_owned(),
        object: ModelObject::Model,
        created: 0,
        owned_by: "gavel".to_owned(),
        description: description.to_owned(),
        name: None,
        categories: None,
        pricing: None,
        context_length: None,
        features: None,
        status: None,
        reputation: None,
    }
}
