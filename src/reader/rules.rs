//! Select and access rules: the select-spec state machine of the facts sheet (§6), the desired
//! rule set the edge keeps per reader, and the reconciliation plan that turns what a reader holds
//! into what it should hold.
//!
//! Owns: `SpecState` and its transitions (shared by the edge's tracking and the reader simulator),
//! validation of rules given as codec JSON, and `plan`, a pure diff. The desired state of a select
//! spec is its own `CurrentState` field (0 disabled, 1 enabled = inactive/ready, 2 active); of an
//! access spec, its `CurrentState` flag. Rules are always added with the state cleared (LLRP and
//! S1/S2 add specs disabled) and then enabled or started.
//! Must not do I/O: storage is `db.rs`, sending is the session's.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::protocol::gbt37987::builders::SpecCommand;
use crate::protocol::gbt37987::json::{param_from_json, param_to_json};
use crate::protocol::gbt37987::{Dialect, Parameter, Value};

/// State of a select spec (facts sheet §6: Disabled / Inactive / Active; the 2019 text's
/// disabled / ready / enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecState {
    /// Added, not enabled: never runs.
    Disabled = 0,
    /// Enabled ("ready"): runs on its start trigger or a StartSelectSpec.
    Inactive = 1,
    /// Running: the reader inventories and reports.
    Active = 2,
}

impl SpecState {
    /// The wire value of `CurrentState`.
    pub fn from_wire(v: u64) -> Option<SpecState> {
        match v {
            0 => Some(SpecState::Disabled),
            1 => Some(SpecState::Inactive),
            2 => Some(SpecState::Active),
            _ => None,
        }
    }

    /// The name used in commands and JSON (`disabled`, `enabled`, `active`).
    pub fn name(self) -> &'static str {
        match self {
            SpecState::Disabled => "disabled",
            SpecState::Inactive => "enabled",
            SpecState::Active => "active",
        }
    }

    /// Parses `disabled`, `enabled` (or `inactive`, `ready`) and `active`.
    pub fn parse(s: &str) -> Option<SpecState> {
        match s {
            "disabled" => Some(SpecState::Disabled),
            "enabled" | "inactive" | "ready" => Some(SpecState::Inactive),
            "active" => Some(SpecState::Active),
            _ => None,
        }
    }
}

/// What moves a select spec between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecEvent {
    /// EnableSelectSpec.
    Enable,
    /// DisableSelectSpec.
    Disable,
    /// StartSelectSpec, or the start trigger firing.
    Start,
    /// StopSelectSpec, the stop trigger firing, or the antenna specs finishing.
    Stop,
}

impl SpecEvent {
    /// The event a select-spec command causes (`None` for delete and the access-spec commands).
    pub fn of_command(command: SpecCommand) -> Option<SpecEvent> {
        match command {
            SpecCommand::EnableSelectSpec => Some(SpecEvent::Enable),
            SpecCommand::DisableSelectSpec => Some(SpecEvent::Disable),
            SpecCommand::StartSelectSpec => Some(SpecEvent::Start),
            SpecCommand::StopSelectSpec => Some(SpecEvent::Stop),
            _ => None,
        }
    }
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} select spec cannot take {event:?}")]
pub struct InvalidTransition {
    pub from: SpecState,
    pub event: SpecEvent,
}

/// The select-spec state machine: Enable takes Disabled to Inactive (and leaves an enabled spec as
/// it is); Start needs an enabled spec; Stop returns an Active spec to Inactive; Disable always
/// ends Disabled. Repeating a command on a spec already in its target state is accepted.
pub fn transition(from: SpecState, event: SpecEvent) -> Result<SpecState, InvalidTransition> {
    use SpecEvent::*;
    use SpecState::*;
    match (from, event) {
        (Disabled, Enable) => Ok(Inactive),
        (state, Enable) => Ok(state),
        (_, Disable) => Ok(Disabled),
        (Disabled, Start | Stop) => Err(InvalidTransition { from, event }),
        (_, Start) => Ok(Active),
        (_, Stop) => Ok(Inactive),
    }
}

/// Rule validation failures (reported to the cloud as the command's rejection reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Json(String),
    #[error("{kind} spec id 0 is reserved (it means `all` in delete commands)")]
    ZeroId { kind: &'static str },
    #[error("select spec {0}: CurrentState must be 0 (disabled), 1 (enabled) or 2 (active)")]
    BadState(u32),
    #[error("{kind} spec {id} does not encode in {dialect}: {reason}")]
    Encode {
        kind: &'static str,
        id: u32,
        dialect: Dialect,
        reason: String,
    },
    #[error("duplicate {kind} spec id {id}")]
    Duplicate { kind: &'static str, id: u32 },
    #[error("too many rules: {0} (at most {MAX_RULES})")]
    TooMany(usize),
}

/// Upper bound of rules of each kind per reader (readers advertise a u8 maximum).
pub const MAX_RULES: usize = 255;

/// The two kinds of rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    /// SelectSpec (inventory rule).
    Select,
    /// AccessSpec (tag-memory read/write rule).
    Access,
}

impl RuleKind {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Select => "select",
            RuleKind::Access => "access",
        }
    }

    /// The code-table name of the parameter.
    pub fn param_name(self) -> &'static str {
        match self {
            RuleKind::Select => "SelectSpec",
            RuleKind::Access => "AccessSpec",
        }
    }
}

/// The rule set a reader should hold, by spec id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRules {
    /// SelectSpec parameters; `CurrentState` is the desired state.
    pub select: BTreeMap<u32, Parameter>,
    /// AccessSpec parameters; the `CurrentState` flag is the desired enabled state.
    pub access: BTreeMap<u32, Parameter>,
}

impl DesiredRules {
    /// Parses `{"select_specs": [...], "access_specs": [...]}` (codec JSON of each parameter),
    /// checking every rule encodes in `dialects`.
    pub fn from_json(document: &Json, dialects: &[Dialect]) -> Result<DesiredRules, RuleError> {
        let mut rules = DesiredRules::default();
        for (key, kind) in [("select_specs", RuleKind::Select), ("access_specs", RuleKind::Access)] {
            let items = match document.get(key) {
                None | Some(Json::Null) => continue,
                Some(Json::Array(items)) => items,
                Some(_) => return Err(RuleError::Json(format!("`{key}` must be an array"))),
            };
            if items.len() > MAX_RULES {
                return Err(RuleError::TooMany(items.len()));
            }
            for item in items {
                let (id, param) = parse_rule(kind, item, dialects)?;
                let map = rules.map_mut(kind);
                if map.insert(id, param).is_some() {
                    return Err(RuleError::Duplicate {
                        kind: kind.as_str(),
                        id,
                    });
                }
            }
        }
        Ok(rules)
    }

    /// The JSON form (`{"select_specs": [...], "access_specs": [...]}`).
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "select_specs": self.select.values().map(param_to_json).collect::<Vec<_>>(),
            "access_specs": self.access.values().map(param_to_json).collect::<Vec<_>>(),
        })
    }

    /// The map of one kind.
    pub fn map_mut(&mut self, kind: RuleKind) -> &mut BTreeMap<u32, Parameter> {
        match kind {
            RuleKind::Select => &mut self.select,
            RuleKind::Access => &mut self.access,
        }
    }

    /// Whether there is nothing to hold.
    pub fn is_empty(&self) -> bool {
        self.select.is_empty() && self.access.is_empty()
    }
}

/// Validates one rule given as codec JSON; returns its id and parameter.
pub fn parse_rule(kind: RuleKind, item: &Json, dialects: &[Dialect]) -> Result<(u32, Parameter), RuleError> {
    let param = param_from_json(kind.param_name(), item).map_err(|e| RuleError::Json(e.to_string()))?;
    let id = spec_id(&param).ok_or_else(|| RuleError::Json(format!("{} without an id", kind.param_name())))?;
    if id == 0 {
        return Err(RuleError::ZeroId { kind: kind.as_str() });
    }
    if kind == RuleKind::Select && select_state(&param).is_none() {
        return Err(RuleError::BadState(id));
    }
    for dialect in dialects {
        param.encode(*dialect, &mut Vec::new()).map_err(|e| RuleError::Encode {
            kind: kind.as_str(),
            id,
            dialect: *dialect,
            reason: e.to_string(),
        })?;
    }
    Ok((id, param))
}

/// The id of a SelectSpec or AccessSpec (its first field).
pub fn spec_id(param: &Parameter) -> Option<u32> {
    let name = param.name()?;
    let field = match name {
        "SelectSpec" => "SelectSpecID",
        "AccessSpec" => "AccessSpecID",
        _ => return None,
    };
    u32::try_from(param.field(field)?.as_u64()?).ok()
}

/// `CurrentState` of a SelectSpec.
pub fn select_state(param: &Parameter) -> Option<SpecState> {
    SpecState::from_wire(param.field("CurrentState")?.as_u64()?)
}

/// The `CurrentState` flag of an AccessSpec (bit 7 of its flags byte).
pub fn access_enabled(param: &Parameter) -> bool {
    param
        .field("Flags")
        .and_then(Value::as_u64)
        .is_some_and(|flags| flags & 0x80 != 0)
}

/// Start trigger type of a SelectSpec (0 Null, 1 Immediate, 2 Periodic, 3 GPI).
pub fn start_trigger(param: &Parameter) -> u64 {
    param
        .child("SelectSpecStartTrigger")
        .and_then(|t| t.field("Type"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// A SelectSpec with `CurrentState` set to `state`.
pub fn with_select_state(param: &Parameter, state: SpecState) -> Parameter {
    let mut out = param.clone();
    if let Some(index) = field_index(param, "CurrentState") {
        if let Some(body) = body_mut(&mut out) {
            if let Some(slot) = body.fields.get_mut(index) {
                *slot = Value::U8(state as u8);
            }
        }
    }
    out
}

/// An AccessSpec with its `CurrentState` flag set to `enabled`.
pub fn with_access_enabled(param: &Parameter, enabled: bool) -> Parameter {
    let mut out = param.clone();
    if let Some(index) = field_index(param, "Flags") {
        if let Some(body) = body_mut(&mut out) {
            if let Some(slot) = body.fields.get_mut(index) {
                let flags = slot.as_u64().unwrap_or(0) as u8;
                *slot = Value::U8(if enabled { flags | 0x80 } else { flags & !0x80 });
            }
        }
    }
    out
}

fn field_index(param: &Parameter, name: &str) -> Option<usize> {
    param.def()?.fields.iter().position(|f| f.name == name)
}

fn body_mut(param: &mut Parameter) -> Option<&mut crate::protocol::gbt37987::Body> {
    match &mut param.body {
        crate::protocol::gbt37987::Content::Decoded(body) => Some(body),
        crate::protocol::gbt37987::Content::Raw(_) => None,
    }
}

/// The parameter as it is added to a reader: state cleared.
pub fn as_added(kind: RuleKind, param: &Parameter) -> Parameter {
    match kind {
        RuleKind::Select => with_select_state(param, SpecState::Disabled),
        RuleKind::Access => with_access_enabled(param, false),
    }
}

/// Whether a reader's copy is the desired rule, state aside (compared as encoded bytes, so the
/// same rule decoded from the wire and parsed from JSON compare equal).
pub fn same_rule(kind: RuleKind, desired: &Parameter, actual: &Parameter, dialect: Dialect) -> bool {
    let encode = |p: &Parameter| {
        let mut out = Vec::new();
        as_added(kind, p).encode(dialect, &mut out).ok().map(|_| out)
    };
    match (encode(desired), encode(actual)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// One step of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// AddSelectSpec or AddAccessSpec with this (state-cleared) parameter.
    Add(RuleKind, Parameter),
    /// A select/access spec command for one id.
    Command(SpecCommand, u32),
}

impl Step {
    /// A short description for results and logs (`add select 7`, `EnableSelectSpec 7`).
    pub fn describe(&self) -> String {
        match self {
            Step::Add(kind, p) => format!("add {} {}", kind.as_str(), spec_id(p).unwrap_or(0)),
            Step::Command(c, id) => format!("{} {id}", c.message_name()),
        }
    }
}

/// The steps that make a reader holding `actual_select` / `actual_access` hold `desired`:
/// delete what differs or should not be there (access specs first, since they refer to select
/// specs), then add and enable or start what is missing, select specs before access specs.
pub fn plan(
    desired: &DesiredRules,
    actual_select: &[Parameter],
    actual_access: &[Parameter],
    dialect: Dialect,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut kept_select: BTreeMap<u32, SpecState> = BTreeMap::new();
    let mut deleted_select = Vec::new();
    for actual in actual_select {
        let Some(id) = spec_id(actual) else { continue };
        match desired.select.get(&id) {
            Some(want) if same_rule(RuleKind::Select, want, actual, dialect) && !kept_select.contains_key(&id) => {
                kept_select.insert(id, select_state(actual).unwrap_or(SpecState::Disabled));
            }
            _ => deleted_select.push(id),
        }
    }
    let mut kept_access: BTreeMap<u32, bool> = BTreeMap::new();
    for actual in actual_access {
        let Some(id) = spec_id(actual) else { continue };
        let bound_to_deleted = actual
            .field("SelectSpecID")
            .and_then(Value::as_u64)
            .is_some_and(|s| deleted_select.iter().any(|d| u64::from(*d) == s));
        match desired.access.get(&id) {
            Some(want)
                if !bound_to_deleted
                    && same_rule(RuleKind::Access, want, actual, dialect)
                    && !kept_access.contains_key(&id) =>
            {
                kept_access.insert(id, access_enabled(actual));
            }
            _ => steps.push(Step::Command(SpecCommand::DeleteAccessSpec, id)),
        }
    }
    deleted_select.dedup();
    steps.extend(
        deleted_select
            .into_iter()
            .map(|id| Step::Command(SpecCommand::DeleteSelectSpec, id)),
    );
    for (id, want) in &desired.select {
        let target = select_state(want).unwrap_or(SpecState::Disabled);
        let current = match kept_select.get(id) {
            Some(state) => *state,
            None => {
                steps.push(Step::Add(RuleKind::Select, as_added(RuleKind::Select, want)));
                SpecState::Disabled
            }
        };
        match target {
            SpecState::Disabled if current != SpecState::Disabled => {
                steps.push(Step::Command(SpecCommand::DisableSelectSpec, *id));
            }
            SpecState::Disabled => {}
            SpecState::Inactive | SpecState::Active => {
                if current == SpecState::Disabled {
                    steps.push(Step::Command(SpecCommand::EnableSelectSpec, *id));
                }
                // A spec with its own start trigger (Immediate, Periodic, GPI) runs by itself.
                if target == SpecState::Active && current != SpecState::Active && start_trigger(want) == 0 {
                    steps.push(Step::Command(SpecCommand::StartSelectSpec, *id));
                }
            }
        }
    }
    for (id, want) in &desired.access {
        let enabled = access_enabled(want);
        match kept_access.get(id) {
            None => {
                steps.push(Step::Add(RuleKind::Access, as_added(RuleKind::Access, want)));
                if enabled {
                    steps.push(Step::Command(SpecCommand::EnableAccessSpec, *id));
                }
            }
            Some(current) if *current != enabled => steps.push(Step::Command(
                if enabled {
                    SpecCommand::EnableAccessSpec
                } else {
                    SpecCommand::DisableAccessSpec
                },
                *id,
            )),
            Some(_) => {}
        }
    }
    steps
}

/// A default inventory rule: read the vehicle data (user memory) on the given antennas and report
/// every tag with all report fields, started by `start` (0 Null: by command or schedule; 1 Immediate).
/// The shape is the S2 default SelectSpec of facts sheet §7 A.
pub fn default_select_spec(id: u32, state: SpecState, start: u8, antennas: &[u8]) -> Json {
    serde_json::json!({
        "SelectSpecID": id,
        "Priority": 0,
        "CurrentState": state as u8,
        "Persistence": false,
        "SelectSpecStartTrigger": {"Type": start},
        "SelectSpecStopTrigger": {"Type": 0, "DurationValue": 0},
        "AntennaSpec": [{
            "AntennaIDs": crate::protocol::gbt37987::model::hex_string(antennas),
            "AntennaSpecStopTrigger": {
                "Type": 3,
                "Duration": 0,
                "TagObservationTrigger": {"TriggerType": 2, "NumberOfTags": 0, "NumberOfAttempts": 1, "TValue": 0, "Timeout": 0}
            },
            "RfSpec": [{
                "RfSpecID": 1,
                "ProtocolID": 0,
                "SelectType": 1,
                "MemoryBank": {"MemoryBankID": 0, "ReadType": 0, "Pointer": 4, "Count": 10, "BankType": 2}
            }]
        }],
        "SelectReportSpec": {
            "Trigger": 2,
            "NValue": 1,
            "EnableSelectSpecID": true,
            "EnableSpecIndex": true,
            "EnableRfSpecID": true,
            "EnableAntennaID": true,
            "EnablePeakRSSI": true,
            "EnableFirstSeenTimestamp": true,
            "EnableLastSeenTimestamp": true,
            "EnableTagSeenCount": true,
            "EnableAccessSpecID": true
        }
    })
}

/// An access rule reading `count` words of user memory from the tag whose TID is `tid`, for
/// `operations` rounds (0 = until deleted), bound to select spec `select_spec_id`.
pub fn read_access_spec(id: u32, select_spec_id: u32, tid: &[u8], count: u16, operations: u16, enabled: bool) -> Json {
    let bits = (tid.len() * 8) as u64;
    serde_json::json!({
        "AccessSpecID": id,
        "SelectSpecID": select_spec_id,
        "AntennaID": 0,
        "ProtocolID": 0,
        "CurrentState": enabled,
        "Persistence": false,
        "AccessSpecStopTrigger": {"Type": if operations == 0 { 0 } else { 1 }, "OperationCountValue": operations},
        "AccessCommand": {
            "HbMatchSpec": {"HbTargetTag": [{
                "MemoryType": 0,
                "MatchType": false,
                "Pointer": 0,
                "TagMask": {"bits": bits, "hex": crate::protocol::gbt37987::model::hex_string(&vec![0xFF; tid.len()])},
                "TagData": {"bits": bits, "hex": crate::protocol::gbt37987::model::hex_string(tid)}
            }]},
            "HbReadSpec": [{
                "OpSpecID": 1,
                "MemoryBank": {"MemoryBankID": 0, "ReadType": 0, "Pointer": 0, "Count": count, "BankType": 2}
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt37987::dialect::ALL_DIALECTS;

    fn select(id: u32, state: SpecState, start: u8) -> Parameter {
        parse_rule(
            RuleKind::Select,
            &default_select_spec(id, state, start, &[1]),
            &ALL_DIALECTS,
        )
        .unwrap()
        .1
    }

    fn access(id: u32, select_id: u32, enabled: bool) -> Parameter {
        parse_rule(
            RuleKind::Access,
            &read_access_spec(id, select_id, &[0xE2, 0, 0, 1], 4, 0, enabled),
            &ALL_DIALECTS,
        )
        .unwrap()
        .1
    }

    fn desired(select: Vec<Parameter>, access: Vec<Parameter>) -> DesiredRules {
        DesiredRules {
            select: select.into_iter().map(|p| (spec_id(&p).unwrap(), p)).collect(),
            access: access.into_iter().map(|p| (spec_id(&p).unwrap(), p)).collect(),
        }
    }

    #[test]
    fn the_state_machine_follows_the_facts_sheet() {
        use SpecEvent::*;
        use SpecState::*;
        assert_eq!(transition(Disabled, Enable), Ok(Inactive));
        assert_eq!(transition(Inactive, Start), Ok(Active));
        assert_eq!(transition(Active, Stop), Ok(Inactive));
        assert_eq!(transition(Active, Disable), Ok(Disabled));
        assert!(transition(Disabled, Start).is_err());
        assert!(transition(Disabled, Stop).is_err());
        assert_eq!(transition(Active, Enable), Ok(Active));
    }

    #[test]
    fn an_empty_reader_gets_every_rule_added_then_enabled_or_started() {
        let want = desired(
            vec![select(7, SpecState::Active, 0), select(8, SpecState::Inactive, 1)],
            vec![access(20, 7, true)],
        );
        let steps: Vec<String> = plan(&want, &[], &[], Dialect::Hb2017)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(
            steps,
            [
                "add select 7",
                "EnableSelectSpec 7",
                "StartSelectSpec 7",
                "add select 8",
                "EnableSelectSpec 8",
                "add access 20",
                "EnableAccessSpec 20"
            ]
        );
    }

    #[test]
    fn a_reader_already_holding_the_rules_needs_nothing() {
        let want = desired(vec![select(7, SpecState::Active, 1)], vec![access(20, 7, true)]);
        let actual_select = [with_select_state(&select(7, SpecState::Active, 1), SpecState::Active)];
        let actual_access = [access(20, 7, true)];
        for dialect in ALL_DIALECTS {
            assert_eq!(plan(&want, &actual_select, &actual_access, dialect), vec![]);
        }
    }

    #[test]
    fn foreign_and_changed_rules_are_deleted_and_the_desired_ones_added() {
        let want = desired(vec![select(7, SpecState::Inactive, 0)], vec![]);
        let mut changed = default_select_spec(7, SpecState::Inactive, 0, &[2]);
        changed["Priority"] = serde_json::json!(3);
        let changed = parse_rule(RuleKind::Select, &changed, &ALL_DIALECTS).unwrap().1;
        let actual_select = [changed, select(99, SpecState::Active, 1)];
        let actual_access = [access(5, 99, true)];
        let steps: Vec<String> = plan(&want, &actual_select, &actual_access, Dialect::Gbt37987_2019)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(
            steps,
            [
                "DeleteAccessSpec 5",
                "DeleteSelectSpec 7",
                "DeleteSelectSpec 99",
                "add select 7",
                "EnableSelectSpec 7"
            ]
        );
    }

    #[test]
    fn only_the_state_is_corrected_when_the_rule_itself_matches() {
        let want = desired(vec![select(7, SpecState::Disabled, 0)], vec![access(20, 7, false)]);
        let actual_select = [with_select_state(&select(7, SpecState::Disabled, 0), SpecState::Active)];
        let actual_access = [access(20, 7, true)];
        let steps: Vec<String> = plan(&want, &actual_select, &actual_access, Dialect::Hb2017)
            .iter()
            .map(Step::describe)
            .collect();
        assert_eq!(steps, ["DisableSelectSpec 7", "DisableAccessSpec 20"]);
    }

    #[test]
    fn rules_with_reserved_ids_bad_states_or_duplicates_are_refused() {
        let zero = serde_json::json!({"select_specs": [default_select_spec(0, SpecState::Active, 1, &[1])]});
        assert!(matches!(
            DesiredRules::from_json(&zero, &ALL_DIALECTS),
            Err(RuleError::ZeroId { .. })
        ));
        let mut bad = default_select_spec(3, SpecState::Active, 1, &[1]);
        bad["CurrentState"] = serde_json::json!(9);
        let bad = serde_json::json!({"select_specs": [bad]});
        assert_eq!(
            DesiredRules::from_json(&bad, &ALL_DIALECTS),
            Err(RuleError::BadState(3))
        );
        let dup = serde_json::json!({"select_specs": [
            default_select_spec(3, SpecState::Active, 1, &[1]),
            default_select_spec(3, SpecState::Active, 1, &[2])
        ]});
        assert!(matches!(
            DesiredRules::from_json(&dup, &ALL_DIALECTS),
            Err(RuleError::Duplicate { .. })
        ));
        let not_json = serde_json::json!({"select_specs": [{"SelectSpecID": 1}]});
        assert!(matches!(
            DesiredRules::from_json(&not_json, &ALL_DIALECTS),
            Err(RuleError::Json(_))
        ));
    }

    #[test]
    fn rules_survive_their_json_form() {
        let want = desired(vec![select(7, SpecState::Active, 0)], vec![access(20, 7, true)]);
        let back = DesiredRules::from_json(&want.to_json(), &ALL_DIALECTS).unwrap();
        assert_eq!(back, want);
    }
}
