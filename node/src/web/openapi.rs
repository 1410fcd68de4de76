//! The OpenAPI document, generated from the handlers' annotations and the types they use, and
//! served at `/api/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, agent, customer, stream};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley",
        description = "Highly available contact-center engine: chats, callbacks, agents, \
                       routing. Every write is acknowledged once committed on a Raft majority; \
                       every node serves every endpoint. Errors are \
                       `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`."
    ),
    paths(
        super::cluster,
        customer::start_chat,
        customer::get_chat,
        customer::post_message,
        customer::chat_events,
        customer::end_chat,
        customer::submit_survey,
        customer::transcript,
        customer::request_callback,
        agent::login,
        agent::logout,
        agent::set_availability,
        agent::my_activities,
        agent::my_events,
        agent::accept,
        agent::transfer,
        agent::complete,
        admin::directory,
        admin::put_department,
        admin::delete_department,
        admin::put_skill,
        admin::delete_skill,
        admin::put_queue,
        admin::delete_queue,
        admin::put_business_hours,
        admin::put_agent,
        admin::delete_agent,
        admin::supervisor_queues,
        admin::supervisor_agents,
        stream::chat_stream,
        stream::agent_stream,
        stream::supervisor_stream,
    ),
    components(schemas(admin::SupervisorView)),
    modifiers(&Credentials),
    tags(
        (name = "customer", description = "Chats and callbacks; chat token from POST /chats"),
        (name = "agent", description = "Agent console; agent token from POST /agents/login"),
        (name = "admin", description = "Directory changes; admin_token from node config"),
        (name = "supervisor", description = "Real-time views; admin_token"),
        (name = "streams", description = "WebSocket streams with after=N resume on any node"),
        (name = "cluster", description = "Cluster state"),
    )
)]
pub struct ApiDoc;

struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, format) in [
            ("chat_token", "chat token"),
            ("agent_token", "agent token"),
            ("admin_token", "admin credential"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format(format)
                        .build(),
                ),
            );
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
