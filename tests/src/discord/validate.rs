//! The request bodies Discord accepts, checked as Discord checks them: message bodies (create,
//! edit, interaction responses, follow-ups) with their components, embeds and allowed mentions;
//! interaction callbacks; thread creation. Pure: a body in, a normalised body or the error Discord
//! would answer out (`50035 Invalid Form Body` with per-field `_errors`, `50006` for an empty
//! message). What the stand-in does not model (components v2, attachments) is refused with a
//! message that says so, never silently accepted.

use serde_json::{Map, Value, json};

/// Message flags.
pub mod flags {
    pub const SUPPRESS_EMBEDS: u64 = 1 << 2;
    pub const EPHEMERAL: u64 = 1 << 6;
    pub const LOADING: u64 = 1 << 7;
    pub const SUPPRESS_NOTIFICATIONS: u64 = 1 << 12;
    pub const IS_COMPONENTS_V2: u64 = 1 << 15;
}

/// An error answer: HTTP status and Discord's JSON error body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    /// `{code, message}` with `status`.
    pub fn new(status: u16, code: u64, message: &str) -> ApiError {
        ApiError {
            status,
            body: json!({ "message": message, "code": code }),
        }
    }

    /// 400 `50035 Invalid Form Body` listing `errors`.
    pub fn form(errors: &[FieldError]) -> ApiError {
        let mut tree = Value::Object(Map::new());
        for e in errors {
            let mut node = &mut tree;
            for key in &e.path {
                node = node
                    .as_object_mut()
                    .expect("every node of the error tree is an object")
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            let list = node
                .as_object_mut()
                .expect("every node of the error tree is an object")
                .entry("_errors")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                list.push(json!({ "code": e.code, "message": e.message }));
            }
        }
        ApiError {
            status: 400,
            body: json!({ "message": "Invalid Form Body", "code": 50035, "errors": tree }),
        }
    }

    /// 400 `50006 Cannot send an empty message`.
    pub fn empty_message() -> ApiError {
        ApiError::new(400, 50006, "Cannot send an empty message")
    }

    /// 400 for something Discord has but the stand-in does not model.
    pub fn unsupported(what: &str) -> ApiError {
        ApiError::new(400, 0, &format!("the Discord stand-in does not model {what}"))
    }

    /// Discord's error code, if the body has one.
    pub fn code(&self) -> Option<u64> {
        self.body.get("code").and_then(Value::as_u64)
    }
}

/// One field's complaint inside a 50035 error.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub path: Vec<String>,
    pub code: &'static str,
    pub message: String,
}

fn field(path: &[&str], code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.iter().map(|s| s.to_string()).collect(),
        code,
        message: message.into(),
    }
}

/// Which endpoint a message body came to; decides required fields and allowed flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// POST /channels/{id}/messages.
    Create,
    /// PATCH /channels/{id}/messages/{id}, PATCH …/messages/@original, interaction type 7.
    Edit,
    /// Interaction callback type 4, and follow-ups.
    InteractionMessage,
}

/// `message_reference` of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRef {
    pub message_id: u64,
    pub channel_id: Option<u64>,
    pub fail_if_not_exists: bool,
}

/// `allowed_mentions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedMentions {
    pub parse_users: bool,
    pub parse_roles: bool,
    pub parse_everyone: bool,
    pub users: Vec<u64>,
    pub roles: Vec<u64>,
    pub replied_user: bool,
}

impl AllowedMentions {
    /// Discord's behaviour without `allowed_mentions`: everything in the content pings.
    pub fn all() -> AllowedMentions {
        AllowedMentions {
            parse_users: true,
            parse_roles: true,
            parse_everyone: true,
            ..AllowedMentions::default()
        }
    }

    /// Whether a `<@user>` in the content pings `user`.
    pub fn allows_user(&self, user: u64) -> bool {
        self.parse_users || self.users.contains(&user)
    }
}

/// A message body that passed validation. For edits, `None` means "field absent, keep", and a
/// JSON `null` became the empty value ("clear").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageBody {
    pub content: Option<String>,
    pub embeds: Option<Vec<Value>>,
    pub components: Option<Vec<Value>>,
    pub allowed_mentions: Option<AllowedMentions>,
    pub flags: Option<u64>,
    pub tts: bool,
    pub nonce: Option<Value>,
    /// `enforce_nonce`: a create with a nonce the author used in the last minutes returns that
    /// message instead of making another.
    pub enforce_nonce: bool,
    pub message_reference: Option<MessageRef>,
    pub sticker_ids: usize,
}

impl MessageBody {
    /// Whether the body would make a message with nothing in it.
    pub fn is_empty(&self) -> bool {
        self.content.as_deref().unwrap_or("").is_empty()
            && self.embeds.as_ref().is_none_or(Vec::is_empty)
            && self.components.as_ref().is_none_or(Vec::is_empty)
            && self.sticker_ids == 0
    }
}

/// Reads a snowflake written as a string (or, as Discord tolerates, a number).
pub fn snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Validates a message body for `kind`.
pub fn message_body(v: &Value, kind: BodyKind) -> Result<MessageBody, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::form(&[field(
            &[],
            "MODEL_TYPE_CONVERT",
            "Only dictionaries may be used in a ModelType",
        )]));
    };
    let mut errors = Vec::new();
    let mut body = MessageBody::default();

    match obj.get("content") {
        None => {}
        Some(Value::Null) => body.content = Some(String::new()),
        Some(Value::String(s)) => {
            if chars(s) > 2000 {
                errors.push(field(
                    &["content"],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 2000 or fewer in length.",
                ));
            }
            body.content = Some(s.clone());
        }
        Some(_) => errors.push(field(
            &["content"],
            "BASE_TYPE_STRING",
            "Could not interpret value as string.",
        )),
    }

    match obj.get("embeds") {
        None => {}
        Some(Value::Null) => body.embeds = Some(Vec::new()),
        Some(Value::Array(list)) => body.embeds = Some(embeds(list, &mut errors)),
        Some(_) => errors.push(field(&["embeds"], "BASE_TYPE_LIST", "Must be an array.")),
    }

    match obj.get("components") {
        None => {}
        Some(Value::Null) => body.components = Some(Vec::new()),
        Some(Value::Array(list)) => body.components = Some(components(list, &mut errors)?),
        Some(_) => errors.push(field(&["components"], "BASE_TYPE_LIST", "Must be an array.")),
    }

    if let Some(am) = obj.get("allowed_mentions").filter(|v| !v.is_null()) {
        body.allowed_mentions = allowed_mentions(am, &mut errors);
    }

    if let Some(f) = obj.get("flags").filter(|v| !v.is_null()) {
        match f.as_u64() {
            Some(bits) if bits & flags::IS_COMPONENTS_V2 != 0 => return Err(ApiError::unsupported("components v2")),
            Some(bits) => {
                let allowed = match kind {
                    BodyKind::Create => flags::SUPPRESS_EMBEDS | flags::SUPPRESS_NOTIFICATIONS,
                    BodyKind::Edit => flags::SUPPRESS_EMBEDS,
                    BodyKind::InteractionMessage => {
                        flags::SUPPRESS_EMBEDS | flags::SUPPRESS_NOTIFICATIONS | flags::EPHEMERAL
                    }
                };
                if bits & !allowed != 0 {
                    errors.push(field(
                        &["flags"],
                        "MESSAGE_FLAGS_INVALID",
                        format!("Invalid flags {bits} for this endpoint."),
                    ));
                }
                body.flags = Some(bits);
            }
            None => errors.push(field(&["flags"], "NUMBER_TYPE_COERCE", "Value is not int.")),
        }
    }

    match obj.get("tts") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => body.tts = *b,
        Some(_) => errors.push(field(&["tts"], "BASE_TYPE_BOOLEAN", "Must be either true or false.")),
    }

    if let Some(nonce) = obj.get("nonce").filter(|v| !v.is_null()) {
        let ok = match nonce {
            Value::String(s) => chars(s) <= 25,
            Value::Number(n) => n.is_i64() || n.is_u64(),
            _ => false,
        };
        if !ok {
            errors.push(field(
                &["nonce"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be an integer or a string of 25 or fewer characters.",
            ));
        }
        body.nonce = Some(nonce.clone());
    }

    match obj.get("enforce_nonce") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => body.enforce_nonce = *b,
        Some(_) => errors.push(field(
            &["enforce_nonce"],
            "BASE_TYPE_BOOLEAN",
            "Must be either true or false.",
        )),
    }

    if let Some(r) = obj.get("message_reference").filter(|v| !v.is_null()) {
        match r.get("message_id").and_then(snowflake) {
            Some(message_id) if kind == BodyKind::Create => {
                body.message_reference = Some(MessageRef {
                    message_id,
                    channel_id: r.get("channel_id").and_then(snowflake),
                    fail_if_not_exists: r.get("fail_if_not_exists").and_then(Value::as_bool).unwrap_or(true),
                })
            }
            Some(_) => {}
            None => errors.push(field(
                &["message_reference", "message_id"],
                "BASE_TYPE_REQUIRED",
                "This field is required",
            )),
        }
    }

    match obj.get("sticker_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.len() <= 3 => body.sticker_ids = list.len(),
        Some(_) => errors.push(field(
            &["sticker_ids"],
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 0 and 3 in length.",
        )),
    }

    match obj.get("attachments") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.is_empty() => {}
        Some(_) => return Err(ApiError::unsupported("attachments")),
    }
    if obj.get("poll").is_some_and(|p| !p.is_null()) {
        return Err(ApiError::unsupported("polls"));
    }

    if !errors.is_empty() {
        return Err(ApiError::form(&errors));
    }
    if kind != BodyKind::Edit && body.is_empty() {
        return Err(ApiError::empty_message());
    }
    Ok(body)
}

fn embeds(list: &[Value], errors: &mut Vec<FieldError>) -> Vec<Value> {
    if list.len() > 10 {
        errors.push(field(
            &["embeds"],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
        ));
    }
    let mut total = 0;
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let i = i.to_string();
        let Some(obj) = e.as_object() else {
            errors.push(field(
                &["embeds", &i],
                "MODEL_TYPE_CONVERT",
                "Only dictionaries may be used in a ModelType",
            ));
            continue;
        };
        let mut check = |path: &[&str], limit: usize| {
            let mut node = Some(e);
            for key in path {
                node = node.and_then(|n| n.get(*key));
            }
            if let Some(text) = node.and_then(Value::as_str) {
                total += chars(text);
                if chars(text) > limit {
                    let mut p = vec!["embeds", i.as_str()];
                    p.extend_from_slice(path);
                    errors.push(field(
                        &p,
                        "BASE_TYPE_MAX_LENGTH",
                        format!("Must be {limit} or fewer in length."),
                    ));
                }
            }
        };
        check(&["title"], 256);
        check(&["description"], 4096);
        check(&["footer", "text"], 2048);
        check(&["author", "name"], 256);
        if let Some(fields) = obj.get("fields").and_then(Value::as_array) {
            if fields.len() > 25 {
                errors.push(field(
                    &["embeds", &i, "fields"],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 25 or fewer in length.",
                ));
            }
            for (j, f) in fields.iter().enumerate() {
                for (key, limit) in [("name", 256), ("value", 1024)] {
                    match f.get(key).and_then(Value::as_str) {
                        Some(text) => {
                            total += chars(text);
                            if chars(text) > limit {
                                errors.push(field(
                                    &["embeds", &i, "fields", &j.to_string(), key],
                                    "BASE_TYPE_MAX_LENGTH",
                                    format!("Must be {limit} or fewer in length."),
                                ));
                            }
                        }
                        None => errors.push(field(
                            &["embeds", &i, "fields", &j.to_string(), key],
                            "BASE_TYPE_REQUIRED",
                            "This field is required",
                        )),
                    }
                }
            }
        }
        let mut normalised: Map<String, Value> = obj
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        normalised.entry("type").or_insert_with(|| Value::from("rich"));
        if let Some(Value::Object(f)) = normalised.get_mut("fields") {
            f.retain(|_, v| !v.is_null());
        }
        out.push(Value::Object(normalised));
    }
    if total > 6000 {
        errors.push(field(
            &["embeds"],
            "MESSAGE_EMBED_TOTAL_LENGTH",
            "Embed size exceeds maximum size of 6000",
        ));
    }
    out
}

/// Validates action rows of buttons and select menus; gives them back with Discord's numeric
/// component `id`s (depth first from 1) where the client gave none.
fn components(rows: &[Value], errors: &mut Vec<FieldError>) -> Result<Vec<Value>, ApiError> {
    if rows.len() > 5 {
        errors.push(field(
            &["components"],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 5 or fewer in length.",
        ));
    }
    let mut next_id = 1u64;
    let mut seen_custom_ids: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let r = r.to_string();
        let Some(row_obj) = row.as_object() else {
            errors.push(field(
                &["components", &r],
                "MODEL_TYPE_CONVERT",
                "Only dictionaries may be used in a ModelType",
            ));
            continue;
        };
        match row_obj.get("type").and_then(Value::as_u64) {
            Some(1) => {}
            Some(t) if t >= 9 => return Err(ApiError::unsupported("components v2")),
            _ => {
                errors.push(field(
                    &["components", &r],
                    "UNION_TYPE_CHOICES",
                    "Value of field \"type\" must be one of (1,).",
                ));
                continue;
            }
        }
        let mut row_out = row_obj.clone();
        row_out.entry("id").or_insert_with(|| Value::from(next_id));
        next_id += 1;
        let children = match row_obj.get("components").and_then(Value::as_array) {
            Some(c) if !c.is_empty() => c,
            _ => {
                errors.push(field(
                    &["components", &r, "components"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 5 in length.",
                ));
                out.push(Value::Object(row_out));
                continue;
            }
        };
        if children.len() > 5 {
            errors.push(field(
                &["components", &r, "components"],
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 5 in length.",
            ));
        }
        let has_select = children
            .iter()
            .any(|c| matches!(c.get("type").and_then(Value::as_u64), Some(3 | 5..=8)));
        if has_select && children.len() > 1 {
            errors.push(field(
                &["components", &r, "components"],
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            ));
        }
        let mut children_out = Vec::new();
        for (c, child) in children.iter().enumerate() {
            let c = c.to_string();
            let path = ["components", r.as_str(), "components", c.as_str()];
            let Some(obj) = child.as_object() else {
                errors.push(field(
                    &path,
                    "MODEL_TYPE_CONVERT",
                    "Only dictionaries may be used in a ModelType",
                ));
                continue;
            };
            let mut child_out: Map<String, Value> = obj
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            child_out.entry("id").or_insert_with(|| Value::from(next_id));
            next_id += 1;
            match obj.get("type").and_then(Value::as_u64) {
                Some(2) => button(obj, &path, errors, &mut seen_custom_ids),
                Some(3 | 5..=8) => select(obj, &path, errors, &mut seen_custom_ids),
                Some(t) if t >= 9 => return Err(ApiError::unsupported("components v2")),
                _ => errors.push(field(
                    &path,
                    "UNION_TYPE_CHOICES",
                    "Value of field \"type\" must be one of (2, 3, 5, 6, 7, 8).",
                )),
            }
            children_out.push(Value::Object(child_out));
        }
        row_out.insert("components".to_string(), Value::Array(children_out));
        out.push(Value::Object(row_out));
    }
    Ok(out)
}

fn custom_id(
    obj: &Map<String, Value>,
    path: &[&str],
    errors: &mut Vec<FieldError>,
    seen: &mut Vec<String>,
    required_code: &'static str,
) {
    let mut p = path.to_vec();
    p.push("custom_id");
    match obj.get("custom_id") {
        Some(Value::String(id)) if (1..=100).contains(&chars(id)) => {
            if seen.contains(id) {
                errors.push(field(
                    &p,
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                ));
            }
            seen.push(id.clone());
        }
        Some(Value::String(_)) => errors.push(field(
            &p,
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        )),
        _ => errors.push(field(&p, required_code, "A custom id is required")),
    }
}

fn button(obj: &Map<String, Value>, path: &[&str], errors: &mut Vec<FieldError>, seen: &mut Vec<String>) {
    let at = |key: &'static str| {
        let mut p = path.to_vec();
        p.push(key);
        p
    };
    let style = obj.get("style").and_then(Value::as_u64);
    if let Some(label) = obj.get("label").and_then(Value::as_str)
        && chars(label) > 80
    {
        errors.push(field(
            &at("label"),
            "BASE_TYPE_MAX_LENGTH",
            "Must be 80 or fewer in length.",
        ));
    }
    if let Some(d) = obj.get("disabled").filter(|v| !v.is_null() && !v.is_boolean()) {
        errors.push(field(
            &at("disabled"),
            "BASE_TYPE_BOOLEAN",
            format!("Must be either true or false, not {d}."),
        ));
    }
    let has_label = obj.get("label").and_then(Value::as_str).is_some_and(|l| !l.is_empty());
    let has_emoji = obj.get("emoji").is_some_and(|e| !e.is_null());
    match style {
        Some(1..=4) => {
            custom_id(obj, path, errors, seen, "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED");
            if obj.get("url").is_some_and(|u| !u.is_null()) {
                errors.push(field(
                    &at("url"),
                    "BUTTON_COMPONENT_URL_NOT_ALLOWED",
                    "A url cannot be specified for a non-link button",
                ));
            }
            if !has_label && !has_emoji {
                errors.push(field(
                    &at("label"),
                    "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                    "A label or emoji is required",
                ));
            }
        }
        Some(5) => {
            if obj.get("url").and_then(Value::as_str).is_none() {
                errors.push(field(
                    &at("url"),
                    "BUTTON_COMPONENT_URL_REQUIRED",
                    "A url is required for a link button",
                ));
            }
            if obj.get("custom_id").is_some_and(|c| !c.is_null()) {
                errors.push(field(
                    &at("custom_id"),
                    "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                    "A custom id cannot be specified for a link button",
                ));
            }
            if !has_label && !has_emoji {
                errors.push(field(
                    &at("label"),
                    "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                    "A label or emoji is required",
                ));
            }
        }
        Some(6) => {
            if obj.get("sku_id").and_then(snowflake).is_none() {
                errors.push(field(&at("sku_id"), "BASE_TYPE_REQUIRED", "This field is required"));
            }
        }
        _ => errors.push(field(
            &at("style"),
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 2, 3, 4, 5, 6}.",
        )),
    }
}

fn select(obj: &Map<String, Value>, path: &[&str], errors: &mut Vec<FieldError>, seen: &mut Vec<String>) {
    custom_id(obj, path, errors, seen, "BASE_TYPE_REQUIRED");
    if obj.get("type").and_then(Value::as_u64) == Some(3) {
        let mut p = path.to_vec();
        p.push("options");
        match obj.get("options").and_then(Value::as_array) {
            Some(options) if (1..=25).contains(&options.len()) => {
                for (i, o) in options.iter().enumerate() {
                    for key in ["label", "value"] {
                        let ok = o
                            .get(key)
                            .and_then(Value::as_str)
                            .is_some_and(|s| (1..=100).contains(&chars(s)));
                        if !ok {
                            let i = i.to_string();
                            let mut q = p.clone();
                            q.push(&i);
                            q.push(key);
                            errors.push(field(
                                &q,
                                "BASE_TYPE_BAD_LENGTH",
                                "Must be between 1 and 100 in length.",
                            ));
                        }
                    }
                }
            }
            _ => errors.push(field(&p, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")),
        }
    }
    if let Some(placeholder) = obj.get("placeholder").and_then(Value::as_str)
        && chars(placeholder) > 150
    {
        let mut p = path.to_vec();
        p.push("placeholder");
        errors.push(field(&p, "BASE_TYPE_MAX_LENGTH", "Must be 150 or fewer in length."));
    }
}

fn allowed_mentions(v: &Value, errors: &mut Vec<FieldError>) -> Option<AllowedMentions> {
    let Some(obj) = v.as_object() else {
        errors.push(field(
            &["allowed_mentions"],
            "MODEL_TYPE_CONVERT",
            "Only dictionaries may be used in a ModelType",
        ));
        return None;
    };
    let mut am = AllowedMentions::default();
    if let Some(parse) = obj.get("parse").filter(|p| !p.is_null()) {
        match parse.as_array() {
            Some(list) => {
                for (i, item) in list.iter().enumerate() {
                    match item.as_str() {
                        Some("users") => am.parse_users = true,
                        Some("roles") => am.parse_roles = true,
                        Some("everyone") => am.parse_everyone = true,
                        _ => errors.push(field(
                            &["allowed_mentions", "parse", &i.to_string()],
                            "BASE_TYPE_CHOICES",
                            "Value must be one of ('roles', 'users', 'everyone').",
                        )),
                    }
                }
            }
            None => errors.push(field(
                &["allowed_mentions", "parse"],
                "BASE_TYPE_LIST",
                "Must be an array.",
            )),
        }
    }
    for (key, target) in [("users", &mut am.users), ("roles", &mut am.roles)] {
        if let Some(list) = obj.get(key).filter(|p| !p.is_null()) {
            match list.as_array() {
                Some(items) if items.len() <= 100 => {
                    for (i, item) in items.iter().enumerate() {
                        match snowflake(item) {
                            Some(id) => target.push(id),
                            None => errors.push(field(
                                &["allowed_mentions", key, &i.to_string()],
                                "NUMBER_TYPE_COERCE",
                                "Value is not snowflake.",
                            )),
                        }
                    }
                }
                _ => errors.push(field(
                    &["allowed_mentions", key],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                )),
            }
        }
    }
    if am.parse_users && !am.users.is_empty() {
        errors.push(field(
            &["allowed_mentions"],
            "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
            "parse:[\"users\"] and users: [ids] are mutually exclusive.",
        ));
    }
    if am.parse_roles && !am.roles.is_empty() {
        errors.push(field(
            &["allowed_mentions"],
            "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
            "parse:[\"roles\"] and roles: [ids] are mutually exclusive.",
        ));
    }
    am.replied_user = obj.get("replied_user").and_then(Value::as_bool).unwrap_or(false);
    Some(am)
}

/// An interaction callback body (`POST /interactions/{id}/{token}/callback`) for a message
/// component interaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Callback {
    /// Type 4: a new message (ephemeral when `flags` has 64).
    Message(MessageBody),
    /// Type 5: "thinking…" now, a message later through `@original`.
    DeferredMessage { ephemeral: bool },
    /// Type 6: nothing now; the component's message may be edited later through `@original`.
    DeferredUpdate,
    /// Type 7: edit the component's message now.
    Update(MessageBody),
    /// Type 9: a modal (recorded; nothing to show).
    Modal(Value),
}

impl Callback {
    /// The callback's `type`.
    pub fn kind(&self) -> u64 {
        match self {
            Callback::Message(_) => 4,
            Callback::DeferredMessage { .. } => 5,
            Callback::DeferredUpdate => 6,
            Callback::Update(_) => 7,
            Callback::Modal(_) => 9,
        }
    }
}

/// Validates a callback to a message component interaction.
pub fn callback(v: &Value) -> Result<Callback, ApiError> {
    let Some(kind) = v.get("type") else {
        return Err(ApiError::form(&[field(
            &["type"],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        )]));
    };
    let data = v.get("data").filter(|d| !d.is_null());
    match kind.as_u64() {
        Some(4) => match data {
            Some(d) => Ok(Callback::Message(message_body(d, BodyKind::InteractionMessage)?)),
            None => Err(ApiError::empty_message()),
        },
        Some(5) => {
            let flags = data.and_then(|d| d.get("flags")).and_then(Value::as_u64).unwrap_or(0);
            Ok(Callback::DeferredMessage {
                ephemeral: flags & flags::EPHEMERAL != 0,
            })
        }
        Some(6) => Ok(Callback::DeferredUpdate),
        Some(7) => Ok(Callback::Update(match data {
            Some(d) => message_body(d, BodyKind::Edit)?,
            None => MessageBody::default(),
        })),
        Some(9) => {
            let d = data.cloned().unwrap_or(Value::Null);
            let mut errors = Vec::new();
            if d.get("custom_id")
                .and_then(Value::as_str)
                .is_none_or(|s| !(1..=100).contains(&chars(s)))
            {
                errors.push(field(
                    &["data", "custom_id"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                ));
            }
            if d.get("title")
                .and_then(Value::as_str)
                .is_none_or(|s| !(1..=45).contains(&chars(s)))
            {
                errors.push(field(
                    &["data", "title"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 45 in length.",
                ));
            }
            if d.get("components")
                .and_then(Value::as_array)
                .is_none_or(|c| !(1..=5).contains(&c.len()))
            {
                errors.push(field(
                    &["data", "components"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 5 in length.",
                ));
            }
            if errors.is_empty() {
                Ok(Callback::Modal(d))
            } else {
                Err(ApiError::form(&errors))
            }
        }
        Some(1 | 8 | 10 | 12) => Err(ApiError::form(&[field(
            &["type"],
            "INTERACTION_RESPONSE_TYPE_INVALID",
            "Interaction response type is not valid for a message component interaction.",
        )])),
        _ => Err(ApiError::form(&[field(
            &["type"],
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 4, 5, 6, 7, 8, 9, 10, 12}.",
        )])),
    }
}

/// A validated `POST /channels/{id}/messages/{id}/threads` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadBody {
    pub name: String,
    pub auto_archive_duration: u64,
    pub rate_limit_per_user: u64,
}

/// Validates a thread-from-message body.
pub fn thread_body(v: &Value) -> Result<ThreadBody, ApiError> {
    let mut errors = Vec::new();
    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
    if !(1..=100).contains(&chars(name)) {
        errors.push(field(
            &["name"],
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        ));
    }
    let auto_archive_duration = match v.get("auto_archive_duration").filter(|d| !d.is_null()) {
        None => 4320,
        Some(d) => match d.as_u64() {
            Some(m @ (60 | 1440 | 4320 | 10080)) => m,
            _ => {
                errors.push(field(
                    &["auto_archive_duration"],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {60, 1440, 4320, 10080}.",
                ));
                0
            }
        },
    };
    let rate_limit_per_user = match v.get("rate_limit_per_user").filter(|d| !d.is_null()) {
        None => 0,
        Some(d) => match d.as_u64() {
            Some(s) if s <= 21600 => s,
            _ => {
                errors.push(field(
                    &["rate_limit_per_user"],
                    "NUMBER_TYPE_MAX",
                    "int value should be less than or equal to 21600.",
                ));
                0
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::form(&errors));
    }
    Ok(ThreadBody {
        name: name.to_string(),
        auto_archive_duration,
        rate_limit_per_user,
    })
}

#[cfg(test)]
mod tests {
    //! Data-driven: each case is a body and the verdict Discord gives it.
    use super::*;

    fn button(id: &str) -> Value {
        json!({"type": 2, "style": 1, "label": "Go", "custom_id": id})
    }

    /// The first error path and code of a create body, or "ok".
    fn verdict(body: Value) -> String {
        match message_body(&body, BodyKind::Create) {
            Ok(_) => "ok".to_string(),
            Err(e) => {
                let mut out = format!("{} {}", e.status, e.code().unwrap_or(0));
                let mut node = e.body.get("errors");
                let mut path = Vec::new();
                while let Some(Value::Object(map)) = node {
                    if let Some(list) = map.get("_errors") {
                        out.push_str(&format!(
                            " {}: {}",
                            path.join("."),
                            list[0]["code"].as_str().unwrap_or("")
                        ));
                        break;
                    }
                    let (k, v) = map.iter().next().expect("error tree nodes are not empty");
                    path.push(k.clone());
                    node = Some(v);
                }
                out
            }
        }
    }

    #[test]
    fn message_bodies() {
        let long = "x".repeat(2001);
        let long_id = "y".repeat(101);
        let cases: Vec<(Value, &str)> = vec![
            (json!({"content": "hi"}), "ok"),
            (
                json!({"content": "", "tts": false, "embeds": [], "sticker_ids": [], "attachments": []}),
                "400 50006",
            ),
            (json!({}), "400 50006"),
            (json!({"content": long}), "400 50035 content: BASE_TYPE_MAX_LENGTH"),
            (json!({"content": 5}), "400 50035 content: BASE_TYPE_STRING"),
            (
                json!({"components": [{"type": 1, "components": [button("a"), button("b")]}]}),
                "ok",
            ),
            (
                json!({"components": [{"type": 1, "components": [button("a"), button("b"), button("c"), button("d"), button("e"), button("f")]}]}),
                "400 50035 components.0.components: BASE_TYPE_BAD_LENGTH",
            ),
            (
                json!({"components": [{"type": 1, "components": [button(&long_id)]}]}),
                "400 50035 components.0.components.0.custom_id: BASE_TYPE_BAD_LENGTH",
            ),
            (
                json!({"components": [{"type": 1, "components": [button("a"), button("a")]}]}),
                "400 50035 components.0.components.1.custom_id: COMPONENT_CUSTOM_ID_DUPLICATED",
            ),
            (
                json!({"components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "x"}]}]}),
                "400 50035 components.0.components.0.custom_id: BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
            ),
            (
                json!({"components": [{"type": 1, "components": [{"type": 2, "style": 3, "custom_id": "a"}]}]}),
                "400 50035 components.0.components.0.label: BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
            ),
            (
                json!({"components": [{"type": 1, "components": [{"type": 2, "style": 5, "label": "doc", "custom_id": "a"}]}]}),
                "400 50035 components.0.components.0.custom_id: BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
            ),
            (
                json!({"components": [{"type": 2, "style": 1, "label": "x", "custom_id": "a"}]}),
                "400 50035 components.0: UNION_TYPE_CHOICES",
            ),
            (
                json!({"components": [{"type": 1, "components": []}]}),
                "400 50035 components.0.components: BASE_TYPE_BAD_LENGTH",
            ),
            (
                json!({"content": "x", "components": [{"type": 17, "components": []}]}),
                "400 0",
            ),
            (
                json!({"content": "x", "flags": 64}),
                "400 50035 flags: MESSAGE_FLAGS_INVALID",
            ),
            (json!({"content": "x", "flags": 4096}), "ok"),
            (json!({"content": "x", "allowed_mentions": {"parse": []}}), "ok"),
            (
                json!({"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}}),
                "400 50035 allowed_mentions: MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
            ),
            (
                json!({"content": "x", "allowed_mentions": {"parse": ["nobody"]}}),
                "400 50035 allowed_mentions.parse.0: BASE_TYPE_CHOICES",
            ),
            (json!({"embeds": [{"title": "t", "description": "d"}]}), "ok"),
            (
                json!({"embeds": [{"title": "t".repeat(257)}]}),
                "400 50035 embeds.0.title: BASE_TYPE_MAX_LENGTH",
            ),
            (json!({"content": "x", "attachments": [{"id": 0}]}), "400 0"),
            (json!([1, 2]), "400 50035 : MODEL_TYPE_CONVERT"),
        ];
        let mut failures = Vec::new();
        for (body, expected) in cases {
            let got = verdict(body.clone());
            if got != expected {
                failures.push(format!("{body}: expected {expected}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn components_get_ids_and_keep_their_fields() {
        let body = message_body(
            &json!({"components": [{"type": 1, "components": [button("a"), button("b")]}]}),
            BodyKind::Create,
        )
        .expect("valid");
        let rows = body.components.expect("components");
        assert_eq!(rows[0]["id"], 1);
        assert_eq!(rows[0]["components"][1]["id"], 3);
        assert_eq!(rows[0]["components"][1]["custom_id"], "b");
    }

    #[test]
    fn edits_may_clear_and_may_be_partial() {
        let body = message_body(&json!({"components": []}), BodyKind::Edit).expect("valid edit");
        assert_eq!(body.components, Some(vec![]));
        assert_eq!(body.content, None);
        let body = message_body(&json!({"content": null}), BodyKind::Edit).expect("valid edit");
        assert_eq!(body.content.as_deref(), Some(""));
    }

    #[test]
    fn callbacks() {
        let ok = |v: Value| callback(&v).map(|c| c.kind()).map_err(|e| (e.status, e.code()));
        assert_eq!(ok(json!({"type": 4, "data": {"content": "no", "flags": 64}})), Ok(4));
        assert_eq!(ok(json!({"type": 4})), Err((400, Some(50006))));
        assert_eq!(ok(json!({"type": 5, "data": {"flags": 64}})), Ok(5));
        assert_eq!(ok(json!({"type": 6})), Ok(6));
        assert_eq!(
            ok(json!({"type": 7, "data": {"content": "done", "components": []}})),
            Ok(7)
        );
        assert_eq!(
            ok(json!({"type": 7, "data": {"content": "x", "flags": 64}})),
            Err((400, Some(50035)))
        );
        assert_eq!(ok(json!({"type": 1})), Err((400, Some(50035))));
        assert_eq!(ok(json!({"data": {}})), Err((400, Some(50035))));
        assert_eq!(
            ok(json!({"type": 9, "data": {"custom_id": "m", "title": "Why?", "components": [{}]}})),
            Ok(9)
        );
    }

    #[test]
    fn threads() {
        assert_eq!(
            thread_body(&json!({"name": "run", "type": 11})).map(|t| t.auto_archive_duration),
            Ok(4320)
        );
        assert!(thread_body(&json!({"name": ""})).is_err());
        assert!(thread_body(&json!({"name": "x", "auto_archive_duration": 61})).is_err());
    }
}
