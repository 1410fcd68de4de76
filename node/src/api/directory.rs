//! Directory entries as the API shows and takes them.

use parley_raft::command as cmd;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of work an activity is; queues and agent limits are per channel.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Web chat.
    Chat,
    /// Phone callback requested by a customer.
    Callback,
    /// Email.
    Email,
}

impl From<cmd::Channel> for Channel {
    fn from(channel: cmd::Channel) -> Self {
        match channel {
            cmd::Channel::Chat => Channel::Chat,
            cmd::Channel::Callback => Channel::Callback,
            cmd::Channel::Email => Channel::Email,
        }
    }
}

impl From<Channel> for cmd::Channel {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Chat => cmd::Channel::Chat,
            Channel::Callback => cmd::Channel::Callback,
            Channel::Email => cmd::Channel::Email,
        }
    }
}

/// A department: groups queues for reporting and administration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Department {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
}

impl From<&cmd::DepartmentSpec> for Department {
    fn from(spec: &cmd::DepartmentSpec) -> Self {
        Self {
            id: spec.id.clone(),
            name: spec.name.clone(),
        }
    }
}

/// A skill that queues require and agents have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Skill {
    /// Stable id, used in queue and agent skill lists.
    pub id: String,
    /// Display name.
    pub name: String,
}

impl From<&cmd::SkillSpec> for Skill {
    fn from(spec: &cmd::SkillSpec) -> Self {
        Self {
            id: spec.id.clone(),
            name: spec.name.clone(),
        }
    }
}

/// A queue's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Queue {
    /// Stable id, used in API paths and commands.
    pub id: String,
    /// Name shown to customers and agents.
    pub name: String,
    /// The department the queue belongs to, if any.
    pub department: Option<String>,
    /// The kind of work the queue takes.
    pub channel: Channel,
    /// Skills an agent needs to be offered this queue's work (all of them).
    pub skills: Vec<String>,
    /// How long an agent has to accept an offer before it goes back to the queue, ms.
    pub offer_timeout_ms: u64,
    /// Whether an agent who lets an offer time out is made not ready for the channel.
    pub not_ready_on_missed_offer: bool,
    /// An assigned chat whose customer stays silent this long is ended, ms; 0 disables.
    pub inactivity_timeout_ms: u64,
    /// When the queue takes new work; `null` means always.
    pub business_hours: Option<BusinessHours>,
    /// What a customer is told outside business hours.
    pub off_hours_message: String,
}

impl From<&cmd::QueueSpec> for Queue {
    fn from(spec: &cmd::QueueSpec) -> Self {
        Self {
            id: spec.id.clone(),
            name: spec.name.clone(),
            department: spec.department.clone(),
            channel: spec.channel.into(),
            skills: spec.skills.clone(),
            offer_timeout_ms: spec.offer_timeout_ms,
            not_ready_on_missed_offer: spec.not_ready_on_missed_offer,
            inactivity_timeout_ms: spec.inactivity_timeout_ms,
            business_hours: spec.business_hours.as_ref().map(BusinessHours::from),
            off_hours_message: spec.off_hours_message.clone(),
        }
    }
}

/// Weekly opening hours in a time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// IANA time zone name, e.g. `Europe/Paris`.
    #[schema(schema_with = time_zone_schema)]
    pub time_zone: String,
    /// Opening intervals, at most 28; a time is inside business hours when it falls in any
    /// of them.
    #[schema(max_items = 28)]
    pub intervals: Vec<OpenInterval>,
}

impl From<&cmd::BusinessHours> for BusinessHours {
    fn from(hours: &cmd::BusinessHours) -> Self {
        Self {
            time_zone: hours.time_zone.clone(),
            intervals: hours.intervals.iter().map(OpenInterval::from).collect(),
        }
    }
}

impl From<BusinessHours> for cmd::BusinessHours {
    fn from(hours: BusinessHours) -> Self {
        Self {
            time_zone: hours.time_zone,
            intervals: hours.intervals.into_iter().map(Into::into).collect(),
        }
    }
}

/// One weekly opening interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenInterval {
    /// Days it applies to: `mon`..`sun`, at least one.
    #[schema(min_items = 1)]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM` local.
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub open: String,
    /// Closing time, `HH:MM` local (`24:00` allowed); at or before `open`, the interval closes
    /// on the next day (`22:00`–`06:00`; equal times: 24 hours).
    #[schema(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
    pub close: String,
}

impl From<&cmd::OpenInterval> for OpenInterval {
    fn from(interval: &cmd::OpenInterval) -> Self {
        Self {
            days: interval.days.iter().map(|d| (*d).into()).collect(),
            open: interval.open.clone(),
            close: interval.close.clone(),
        }
    }
}

impl From<OpenInterval> for cmd::OpenInterval {
    fn from(interval: OpenInterval) -> Self {
        Self {
            days: interval.days.into_iter().map(Into::into).collect(),
            open: interval.open,
            close: interval.close,
        }
    }
}

/// A day of the week.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl From<cmd::Weekday> for Weekday {
    fn from(day: cmd::Weekday) -> Self {
        match day {
            cmd::Weekday::Mon => Weekday::Mon,
            cmd::Weekday::Tue => Weekday::Tue,
            cmd::Weekday::Wed => Weekday::Wed,
            cmd::Weekday::Thu => Weekday::Thu,
            cmd::Weekday::Fri => Weekday::Fri,
            cmd::Weekday::Sat => Weekday::Sat,
            cmd::Weekday::Sun => Weekday::Sun,
        }
    }
}

impl From<Weekday> for cmd::Weekday {
    fn from(day: Weekday) -> Self {
        match day {
            Weekday::Mon => cmd::Weekday::Mon,
            Weekday::Tue => cmd::Weekday::Tue,
            Weekday::Wed => cmd::Weekday::Wed,
            Weekday::Thu => cmd::Weekday::Thu,
            Weekday::Fri => cmd::Weekday::Fri,
            Weekday::Sat => cmd::Weekday::Sat,
            Weekday::Sun => cmd::Weekday::Sun,
        }
    }
}

/// The schema of an agent's per-channel limits: an optional count per channel, 0 (never
/// offered that channel) to [`parley_raft::limits::AGENT_CHANNEL_LIMIT_MAX`], nothing else.
pub fn channel_limits_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let limit = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(parley_raft::limits::AGENT_CHANNEL_LIMIT_MAX))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("chat", limit())
        .property("callback", limit())
        .property("email", limit())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "Limit per channel, e.g. `{\"chat\": 3, \"callback\": 1}`",
        ))
        .build()
}

/// The schema of a queue's channel: `chat`, `callback` or `email` (fed by mailboxes), or
/// `null` for the default, `chat`.
pub fn queue_channel_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::json!("chat"),
            serde_json::json!("callback"),
            serde_json::json!("email"),
            serde_json::Value::Null,
        ]))
        .description(Some("`chat` (default), `callback` or `email`"))
        .build()
}

/// The schema of a time zone: one of the names of the tz database built into the binary,
/// which is what business hours are checked against.
pub fn time_zone_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let mut names: Vec<String> = jiff::tz::db()
        .available()
        .map(|name| name.to_string())
        .collect();
    names.sort();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some("IANA time zone name, e.g. `Europe/Paris`"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_and_weekday_round_trips_through_the_state_type() {
        for channel in cmd::Channel::ALL {
            assert_eq!(cmd::Channel::from(Channel::from(channel)), channel);
            // The wire name is the state's name for it.
            assert_eq!(
                serde_json::to_value(Channel::from(channel)).ok(),
                Some(serde_json::Value::from(channel.as_str()))
            );
        }
        use cmd::Weekday as W;
        for day in [W::Mon, W::Tue, W::Wed, W::Thu, W::Fri, W::Sat, W::Sun] {
            assert_eq!(cmd::Weekday::from(Weekday::from(day)), day);
        }
    }
}
