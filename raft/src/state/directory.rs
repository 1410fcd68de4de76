//! Departments, skills, queues and agents: seeded from node config and changed through the
//! admin API.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{check_directory_id, check_entry, check_text, hours, Agent, Queue, State};
use crate::command::{
    AgentSpec, DepartmentSpec, Directory, DirectoryEntry, DirectoryKey, Outcome, QueueSpec,
    Rejection, SkillSpec,
};
use crate::limits;

impl DirectoryEntry {
    /// The key under which the entry is recorded (`queue:ID`, ...).
    pub fn key(&self) -> String {
        match self {
            DirectoryEntry::Department(d) => format!("department:{}", d.id),
            DirectoryEntry::Skill(s) => format!("skill:{}", s.id),
            DirectoryEntry::Queue(q) => format!("queue:{}", q.id),
            DirectoryEntry::Agent(a) => format!("agent:{}", a.id),
        }
    }
}

impl DirectoryKey {
    fn kind(&self) -> &'static str {
        match self {
            DirectoryKey::Department(_) => "department",
            DirectoryKey::Skill(_) => "skill",
            DirectoryKey::Queue(_) => "queue",
            DirectoryKey::Agent(_) => "agent",
        }
    }

    fn id(&self) -> &str {
        match self {
            DirectoryKey::Department(id)
            | DirectoryKey::Skill(id)
            | DirectoryKey::Queue(id)
            | DirectoryKey::Agent(id) => id,
        }
    }
}

pub(super) fn check_name(name: &str) -> Result<(), Rejection> {
    check_text("name", name, 1, limits::NAME_BYTES_MAX)
}

fn check_skill_list(state: &State, skills: &[String]) -> Result<(), Rejection> {
    if skills.len() > limits::SKILLS_PER_ENTRY_MAX {
        return Err(Rejection::invalid(
            "skills",
            format!("more than {} skills", limits::SKILLS_PER_ENTRY_MAX),
        ));
    }
    for skill in skills {
        if !state.skills.contains_key(skill) {
            return Err(Rejection::UnknownEntry {
                kind: "skill".to_owned(),
                id: skill.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a queue spec on its own (no references).
pub fn check_queue_spec(spec: &QueueSpec) -> Result<(), Rejection> {
    check_directory_id("id", &spec.id)?;
    check_name(&spec.name)?;
    if !(limits::OFFER_TIMEOUT_MS_MIN..=limits::OFFER_TIMEOUT_MS_MAX)
        .contains(&spec.offer_timeout_ms)
    {
        return Err(Rejection::invalid(
            "offer_timeout_ms",
            format!(
                "must be between {} and {}",
                limits::OFFER_TIMEOUT_MS_MIN,
                limits::OFFER_TIMEOUT_MS_MAX
            ),
        ));
    }
    if spec.inactivity_timeout_ms > limits::INACTIVITY_TIMEOUT_MS_MAX {
        return Err(Rejection::invalid(
            "inactivity_timeout_ms",
            format!("must be at most {}", limits::INACTIVITY_TIMEOUT_MS_MAX),
        ));
    }
    check_text(
        "off_hours_message",
        &spec.off_hours_message,
        1,
        limits::OFF_HOURS_MESSAGE_BYTES_MAX,
    )?;
    if let Some(hours) = &spec.business_hours {
        hours::check(hours)?;
    }
    Ok(())
}

/// Checks an agent spec on its own (no references).
pub fn check_agent_spec(spec: &AgentSpec) -> Result<(), Rejection> {
    check_directory_id("id", &spec.id)?;
    check_name(&spec.name)?;
    for (channel, limit) in &spec.limits {
        if *limit > limits::AGENT_CHANNEL_LIMIT_MAX {
            return Err(Rejection::invalid(
                "limits",
                format!(
                    "{} limit {limit} is over {}",
                    channel.as_str(),
                    limits::AGENT_CHANNEL_LIMIT_MAX
                ),
            ));
        }
    }
    if !spec.password_hash.starts_with("$argon2")
        || spec.password_hash.len() > limits::PASSWORD_HASH_BYTES_MAX
    {
        return Err(Rejection::invalid(
            "password_hash",
            "must be an argon2 PHC string ($argon2id$...)",
        ));
    }
    Ok(())
}

impl State {
    pub(super) fn seed(&mut self, directory: &Directory) -> Outcome {
        // Referenced entries first, so a config's queues can name its departments and skills.
        let entries = directory
            .departments
            .iter()
            .cloned()
            .map(DirectoryEntry::Department)
            .chain(directory.skills.iter().cloned().map(DirectoryEntry::Skill))
            .chain(directory.queues.iter().cloned().map(DirectoryEntry::Queue))
            .chain(directory.agents.iter().cloned().map(DirectoryEntry::Agent));
        let mut added = 0;
        for entry in entries {
            if self.seeded.contains(&entry.key()) {
                continue;
            }
            // An invalid entry is skipped; node config validation reports it before proposing.
            if check_entry(&entry).is_ok() && self.upsert(&entry).is_ok() {
                added += 1;
            }
        }
        Outcome::Seeded { added }
    }

    pub(super) fn upsert(&mut self, entry: &DirectoryEntry) -> Result<Outcome, Rejection> {
        match entry {
            DirectoryEntry::Department(spec) => self.upsert_department(spec)?,
            DirectoryEntry::Skill(spec) => self.upsert_skill(spec)?,
            DirectoryEntry::Queue(spec) => self.upsert_queue(spec)?,
            DirectoryEntry::Agent(spec) => self.upsert_agent(spec)?,
        }
        self.seeded.insert(entry.key());
        Ok(Outcome::Done)
    }

    fn upsert_department(&mut self, spec: &DepartmentSpec) -> Result<(), Rejection> {
        self.departments.insert(spec.id.clone(), spec.clone());
        Ok(())
    }

    fn upsert_skill(&mut self, spec: &SkillSpec) -> Result<(), Rejection> {
        self.skills.insert(spec.id.clone(), spec.clone());
        Ok(())
    }

    fn upsert_queue(&mut self, spec: &QueueSpec) -> Result<(), Rejection> {
        if let Some(department) = &spec.department {
            if !self.departments.contains_key(department) {
                return Err(Rejection::UnknownEntry {
                    kind: "department".to_owned(),
                    id: department.clone(),
                });
            }
        }
        check_skill_list(self, &spec.skills)?;
        if spec.channel != crate::command::Channel::Email {
            if let Some(mailbox) = self.queue_feeds_mailbox(&spec.id) {
                return Err(Rejection::conflict(format!(
                    "mailbox {mailbox} feeds this queue; it must stay an email queue"
                )));
            }
        }
        let recent_handle_ms = match self.queues.get(&spec.id) {
            Some(existing) => {
                if existing.spec.channel != spec.channel && self.queue_has_live_work(&spec.id) {
                    return Err(Rejection::conflict(
                        "a queue's channel cannot change while it holds live work".to_owned(),
                    ));
                }
                existing.recent_handle_ms.clone()
            }
            None => VecDeque::new(),
        };
        self.queues.insert(
            spec.id.clone(),
            Queue {
                spec: spec.clone(),
                recent_handle_ms,
            },
        );
        Ok(())
    }

    fn upsert_agent(&mut self, spec: &AgentSpec) -> Result<(), Rejection> {
        check_skill_list(self, &spec.skills)?;
        if let Some(existing) = self.agents.get(&spec.id) {
            for (channel, limit) in &spec.limits {
                let load = self.load(existing, *channel);
                if load > *limit as usize {
                    return Err(Rejection::conflict(format!(
                        "agent {} holds {load} {} activities; finish some before lowering the \
                         limit to {limit}",
                        spec.id,
                        channel.as_str()
                    )));
                }
            }
            for channel in existing.work.iter().filter_map(|a| self.activities.get(a)) {
                if !spec.limits.contains_key(&channel.channel) {
                    return Err(Rejection::conflict(format!(
                        "agent {} holds {} work; keep a limit for that channel",
                        spec.id,
                        channel.channel.as_str()
                    )));
                }
            }
        }
        match self.agents.get_mut(&spec.id) {
            Some(agent) => agent.spec = spec.clone(),
            None => {
                self.agents.insert(
                    spec.id.clone(),
                    Agent {
                        spec: spec.clone(),
                        session: None,
                        ready: BTreeMap::new(),
                        not_ready_reason: None,
                        idle_since_ms: 0,
                        work: BTreeSet::new(),
                        feed: VecDeque::new(),
                        feed_next_seq: 1,
                        own_stamp: None,
                    },
                );
            }
        }
        Ok(())
    }

    pub(super) fn remove(&mut self, key: &DirectoryKey) -> Result<Outcome, Rejection> {
        let unknown = || Rejection::UnknownEntry {
            kind: key.kind().to_owned(),
            id: key.id().to_owned(),
        };
        let in_use = |by: String| {
            Rejection::conflict(format!("{} {} is used by {by}", key.kind(), key.id()))
        };
        match key {
            DirectoryKey::Department(id) => {
                if !self.departments.contains_key(id) {
                    return Err(unknown());
                }
                if let Some(queue) = self
                    .queues
                    .values()
                    .find(|q| q.spec.department.as_ref() == Some(id))
                {
                    return Err(in_use(format!("queue {}", queue.spec.id)));
                }
                self.departments.remove(id);
            }
            DirectoryKey::Skill(id) => {
                if !self.skills.contains_key(id) {
                    return Err(unknown());
                }
                if let Some(queue) = self.queues.values().find(|q| q.spec.skills.contains(id)) {
                    return Err(in_use(format!("queue {}", queue.spec.id)));
                }
                if let Some(agent) = self.agents.values().find(|a| a.spec.skills.contains(id)) {
                    return Err(in_use(format!("agent {}", agent.spec.id)));
                }
                self.skills.remove(id);
            }
            DirectoryKey::Queue(id) => {
                if !self.queues.contains_key(id) {
                    return Err(unknown());
                }
                if self.queue_has_live_work(id) {
                    return Err(in_use("live activities".to_owned()));
                }
                if let Some(mailbox) = self.queue_feeds_mailbox(id) {
                    return Err(in_use(format!("mailbox {mailbox}")));
                }
                self.queues.remove(id);
            }
            DirectoryKey::Agent(id) => {
                let agent = self.agents.get(id).ok_or_else(unknown)?;
                if agent.session.is_some() || !agent.work.is_empty() {
                    return Err(Rejection::conflict(format!(
                        "agent {id} is logged in or holds work"
                    )));
                }
                self.agents.remove(id);
            }
        }
        Ok(Outcome::Done)
    }

    fn queue_has_live_work(&self, queue_id: &str) -> bool {
        self.activities
            .values()
            .any(|a| a.queue_id == queue_id && !a.status.is_terminal())
    }
}
