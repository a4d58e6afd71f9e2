//! `GET /v1/models` and `GET /v1/models/{id}`: the OpenAI model list and one model. Every
//! public agent is a model (`id` = its slug), plus the virtual models `auction` and
//! `auction/<category>` for each category in use; any other id is OpenAI's 404
//! `model_not_found`.

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use crate::auth::MaybeCaller;
use crate::error::ApiError;
use crate::routes::agents::{pricing_json, reputation_json};
use crate::state::AppState;

pub(crate) async fn list(
    _caller: MaybeCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let data = models(&state).await?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{id}`; slugs hold a `/`, so the id is the rest of the path.
pub(crate) async fn retrieve(
    _caller: MaybeCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    models(&state)
        .await?
        .into_iter()
        .find(|model| model["id"] == id.as_str())
        .map(|model| HttpResponse::Ok().json(model))
        .ok_or_else(|| ApiError::ModelNotFound { model: id.chars().take(200).collect() })
}

/// Every model, in the list's order: `auction`, `auction/<category>`, then agents by slug.
async fn models(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let now = state.now();
    let snapshot = state.agent_index.snapshot(&state.db, now.timestamp_millis()).await?;
    let params = state.auction_parameters();
    let mut data: Vec<Value> =
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
        data.push(json!({
            "id": agent.slug,
            "object": "model",
            "created": agent.created_at.timestamp(),
            "owned_by": owner,
            "name": agent.name,
            "description": agent.description,
            "categories": agent.categories,
            "pricing": pricing_json(&agent.pricing),
            "context_length": agent.context_length,
            "features": agent.features,
            "status": crate::routes::agents::status_word(state, agent),
            "reputation": reputation_json(agent, &params, now.timestamp_millis()),
        }));
    }
    Ok(data)
}

fn virtual_model(id: &str, description: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "gavel", "description": description})
}
