//! The OpenAPI document, generated from the handlers' annotations and the types they use, and
//! served at `/api/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, agent, backup, customer, diagnostics, email, members, pages, stream, upgrade};

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
        pages::public_queues,
        agent::login,
        agent::logout,
        agent::set_availability,
        agent::my_activities,
        agent::my_events,
        agent::accept,
        agent::transfer,
        agent::complete,
        email::case_of,
        email::attachment,
        email::reply,
        email::list_mailboxes,
        email::put_mailbox,
        email::delete_mailbox,
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
        admin::supervisor_activity,
        members::list_members,
        members::add_member,
        members::promote_member,
        members::remove_member,
        upgrade::upgrade_status,
        upgrade::finalize_upgrade,
        backup::snapshot,
        diagnostics::validate,
        stream::chat_stream,
        stream::agent_stream,
        stream::supervisor_stream,
    ),
    components(schemas(admin::SupervisorView)),
    modifiers(&Credentials, &EdgeAnswers),
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

/// What the HTTP edge checks on every operation, written into the document once instead of on
/// each handler: the path ids' shape, the 400 every malformed input gets, and the 413/415 of a
/// body that is too large or not JSON.
struct EdgeAnswers;

/// Path ids as `web::path_id` takes them: 1 to 128 printable ASCII characters, no spaces.
const PATH_ID_PATTERN: &str = "^[!-~]{1,128}$";
/// Directory ids (admin paths) as the directory takes them.
const DIRECTORY_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

impl Modify for EdgeAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{
            AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type,
        };
        use utoipa::openapi::{RefOr, Response};
        let mut body_schemas = std::collections::BTreeSet::new();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let pattern = if path.starts_with("/api/v1/admin/") {
                DIRECTORY_ID_PATTERN
            } else {
                PATH_ID_PATTERN
            };
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    let RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    // Numeric path ids (node ids) keep their integer schema.
                    let numeric = matches!(
                        &parameter.schema,
                        Some(RefOr::T(Schema::Object(object)))
                            if object.schema_type == SchemaType::Type(Type::Integer)
                    );
                    // A path parameter with a shape of its own (an attachment's hash) keeps it.
                    let shaped = matches!(
                        &parameter.schema,
                        Some(RefOr::T(Schema::Object(object))) if object.pattern.is_some()
                    );
                    if parameter.parameter_in == ParameterIn::Path && !numeric && !shaped {
                        parameter.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .pattern(Some(pattern))
                                .into(),
                        );
                    }
                }
                let mut answers = vec![(
                    "400",
                    "Malformed input: `malformed_json`, `invalid_field`, `invalid_query`, \
                     `invalid_path` or `not_a_websocket`",
                )];
                // Every documented body is required (an absent body is 415, a JSON `null` is
                // a value), whatever utoipa derived from an `Option` body type.
                if let Some(utoipa::openapi::RefOr::T(body)) = operation.request_body.as_mut() {
                    body.required = Some(utoipa::openapi::Required::True);
                }
                if operation.request_body.is_some() {
                    answers.push(("413", "`payload_too_large`: the body exceeds 64 KiB"));
                    answers.push(("415", "`unsupported_media_type`: the body is not JSON"));
                }
                for (status, description) in answers {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(Response::new(description)));
                }
                body_schemas.extend(body_schema_names(operation));
            }
        }
        // Every request body refuses unknown fields (serde's `deny_unknown_fields`). utoipa
        // says so for a struct, not for the variants of a tagged enum (`TransferBody`).
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in body_schemas {
            let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(&name) else {
                continue;
            };
            for variant in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = variant {
                    object
                        .additional_properties
                        .get_or_insert_with(|| Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

/// The component names of the schemas `operation`'s request body refers to.
fn body_schema_names(operation: &utoipa::openapi::path::Operation) -> Vec<String> {
    use utoipa::openapi::RefOr;
    let Some(RefOr::T(body)) = &operation.request_body else {
        return Vec::new();
    };
    body.content
        .values()
        .filter_map(|content| match content {
            RefOr::T(content) => match &content.schema {
                Some(RefOr::Ref(reference)) => reference.ref_location.rsplit('/').next(),
                _ => None,
            },
            RefOr::Ref(_) => None,
        })
        .map(str::to_owned)
        .collect()
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
