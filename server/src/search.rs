//! Parser for MLflow search filter strings and `order_by` clauses.
//!
//! This module turns the `filter` and `order_by` strings of `runs/search`, `experiments/search`,
//! `registered-models/search` and `model-versions/search` into a small AST ([`Clause`],
//! [`OrderBy`]) with every entity alias and attribute alias resolved to one canonical name. It is
//! pure: it does no I/O and builds no SQL; the store layer turns the AST into queries. Every error
//! is a [`SearchError`] whose message is meant to be shown to the user as `INVALID_PARAMETER_VALUE`.
//!
//! Grammar (keywords are case-insensitive, whitespace is free between tokens):
//!
//! ```text
//! filter     := ws* | clause ("AND" clause)*
//! clause     := key comparator value
//! key        := part ("." part)*            first part = entity prefix when there are several
//! part       := bare | `backticked` | "double-quoted"
//! bare       := (alphanumeric | "_")+
//! comparator := "=" | "!=" | "<>" | ">" | ">=" | "<" | "<=" | LIKE | ILIKE | IN | NOT IN
//! value      := number | 'string' | "string" | "(" string ("," string)* ")"
//! number     := "-"? digits ("." digits?)? exponent? | "-"? "." digits exponent?
//! order_by   := key (ASC | DESC)?
//! ```
//!
//! Decisions worth knowing:
//! - Quoted strings and quoted identifiers escape their own quote character by doubling it, as in
//!   SQL: `'it''s'` is `it's`, `"a""b"` is `a"b`, ``` `a``b` ``` is ``a`b``. A backslash is an
//!   ordinary character, so LIKE patterns such as `'a\_b'` reach the store unchanged.
//! - A double-quoted token is an identifier in key position and a string in value position; a
//!   double-quoted string is accepted wherever a string value is (params, tags, attributes,
//!   datasets, list items), but never where a number is expected.
//! - `tags.mlflow.user` splits at the first dot only: entity `tags`, key `mlflow.user`. A key
//!   without a prefix is an attribute. Entity prefixes are case-insensitive; attribute names are
//!   exact, except the aliases (`run name`, `created`, `timestamp`), which match in any case.
//! - `IN` lists keep every item; MLflow's lower-case filtering of `run_id` lists is left to the store.
//! - Numbers must be finite `f64`s and end at a token boundary (`1abc` and `1e999` are errors).
//! - The parser is a single left-to-right pass with no recursion, so nesting depth is never a
//!   concern; it never panics on any input.

use std::fmt::Write as _;

/// What a filter clause or `order_by` key refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

/// Comparison operator of a filter clause (`<>` parses as [`Comparator::Ne`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
    /// `tags.k IS NULL`: the tag is not set (runs and experiments only; no value follows).
    IsNull,
    /// `tags.k IS NOT NULL`: the tag is set, whatever its value.
    IsNotNull,
}

/// Right-hand side of a filter clause. `List` only appears with `IN` / `NOT IN`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    String(String),
    List(Vec<String>),
}

/// One `<entity>.<key> <comparator> <value>` comparison; a filter is the AND of its clauses.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    /// Metric/param/tag key as written, or the canonical attribute / dataset field name.
    pub key: String,
    pub comparator: Comparator,
    pub value: Value,
}

/// One parsed `order_by` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub entity: Entity,
    /// Metric/param/tag key as written, or the canonical attribute name.
    pub key: String,
    pub ascending: bool,
}

/// A filter or `order_by` string that cannot be accepted; the message is user-facing.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct SearchError(pub String);

// === entry points ===

/// Parses a `runs/search` filter.
pub fn parse_run_filter(filter: &str) -> Result<Vec<Clause>, SearchError> {
    parse_filter(filter, &RUNS)
}

/// Parses one `runs/search` `order_by` entry.
pub fn parse_run_order_by(order_by: &str) -> Result<OrderBy, SearchError> {
    parse_order_by(order_by, &RUNS)
}

/// Parses an `experiments/search` filter.
pub fn parse_experiment_filter(filter: &str) -> Result<Vec<Clause>, SearchError> {
    parse_filter(filter, &EXPERIMENTS)
}

/// Parses one `experiments/search` `order_by` entry.
pub fn parse_experiment_order_by(order_by: &str) -> Result<OrderBy, SearchError> {
    parse_order_by(order_by, &EXPERIMENTS)
}

/// Parses a `registered-models/search` filter.
pub fn parse_registered_model_filter(filter: &str) -> Result<Vec<Clause>, SearchError> {
    parse_filter(filter, &REGISTERED_MODELS)
}

/// Parses one `registered-models/search` `order_by` entry.
pub fn parse_registered_model_order_by(order_by: &str) -> Result<OrderBy, SearchError> {
    parse_order_by(order_by, &REGISTERED_MODELS)
}

/// Parses a `model-versions/search` filter.
pub fn parse_model_version_filter(filter: &str) -> Result<Vec<Clause>, SearchError> {
    parse_filter(filter, &MODEL_VERSIONS)
}

/// Parses one `model-versions/search` `order_by` entry.
pub fn parse_model_version_order_by(order_by: &str) -> Result<OrderBy, SearchError> {
    parse_order_by(order_by, &MODEL_VERSIONS)
}

/// Parses a `logged-models/search` filter: attributes (including `model_id IN (…)`), metrics,
/// params and tags.
pub fn parse_logged_model_filter(filter: &str) -> Result<Vec<Clause>, SearchError> {
    parse_filter(filter, &LOGGED_MODELS)
}

/// Parses the `field_name` of one `logged-models/search` `order_by` entry (an attribute or
/// `metrics.<key>`; the direction travels separately in that API).
pub fn parse_logged_model_order_field(field: &str) -> Result<OrderBy, SearchError> {
    parse_order_by(field, &LOGGED_MODELS)
}

// === schemas ===

/// How a key's value is typed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// Quoted string with `= != LIKE ILIKE`.
    Str,
    /// Quoted string with `= != LIKE ILIKE`, or a list with `IN` / `NOT IN`.
    StrOrList,
    /// Unquoted number with `= != > >= < <=`.
    Num,
}

/// What one search endpoint accepts.
struct Schema {
    /// Entity prefixes (lower case) accepted in filters and order_by.
    entities: &'static [(&'static str, Entity)],
    /// Canonical prefixes for error messages.
    entity_names: &'static str,
    filter_attrs: &'static [(&'static str, KeyKind)],
    /// Lower-case alias to canonical filter attribute.
    filter_aliases: &'static [(&'static str, &'static str)],
    order_entities: &'static [Entity],
    order_entity_names: &'static str,
    order_attrs: &'static [&'static str],
    /// Lower-case alias to canonical order_by attribute.
    order_aliases: &'static [(&'static str, &'static str)],
    /// Whether tags may be tested with `IS NULL` / `IS NOT NULL` (what MLflow 3's UI sends).
    tag_null_tests: bool,
}

const ATTRIBUTE_ALIASES: [(&str, Entity); 3] = [
    ("attribute", Entity::Attribute),
    ("attributes", Entity::Attribute),
    ("attr", Entity::Attribute),
];
const TAG_ALIASES: [(&str, Entity); 2] = [("tag", Entity::Tag), ("tags", Entity::Tag)];

const RUN_ENTITIES: &[(&str, Entity)] = &[
    ("metric", Entity::Metric),
    ("metrics", Entity::Metric),
    ("param", Entity::Param),
    ("params", Entity::Param),
    ("parameter", Entity::Param),
    ("parameters", Entity::Param),
    TAG_ALIASES[0],
    TAG_ALIASES[1],
    ATTRIBUTE_ALIASES[0],
    ATTRIBUTE_ALIASES[1],
    ATTRIBUTE_ALIASES[2],
    ("run", Entity::Attribute),
    ("dataset", Entity::Dataset),
    ("datasets", Entity::Dataset),
];

const OTHER_ENTITIES: &[(&str, Entity)] = &[
    TAG_ALIASES[0],
    TAG_ALIASES[1],
    ATTRIBUTE_ALIASES[0],
    ATTRIBUTE_ALIASES[1],
    ATTRIBUTE_ALIASES[2],
];

const RUN_ATTRS: &[(&str, KeyKind)] = &[
    ("run_id", KeyKind::StrOrList),
    ("run_name", KeyKind::Str),
    ("status", KeyKind::Str),
    ("user_id", KeyKind::Str),
    ("artifact_uri", KeyKind::Str),
    ("start_time", KeyKind::Num),
    ("end_time", KeyKind::Num),
];
const RUN_ATTR_ALIASES: &[(&str, &str)] = &[("run name", "run_name"), ("created", "start_time")];

const DATASET_KEYS: &[(&str, KeyKind)] = &[
    ("name", KeyKind::StrOrList),
    ("digest", KeyKind::StrOrList),
    ("context", KeyKind::StrOrList),
];

static RUNS: Schema = Schema {
    entities: RUN_ENTITIES,
    entity_names: "metrics, params, tags, attributes, datasets",
    filter_attrs: RUN_ATTRS,
    filter_aliases: RUN_ATTR_ALIASES,
    order_entities: &[Entity::Metric, Entity::Param, Entity::Tag, Entity::Attribute],
    order_entity_names: "metrics, params, tags, attributes",
    order_attrs: &[
        "run_id",
        "run_name",
        "status",
        "user_id",
        "artifact_uri",
        "start_time",
        "end_time",
    ],
    order_aliases: RUN_ATTR_ALIASES,
    tag_null_tests: true,
};

static EXPERIMENTS: Schema = Schema {
    entities: OTHER_ENTITIES,
    entity_names: "attributes, tags",
    filter_attrs: &[
        ("name", KeyKind::Str),
        ("creation_time", KeyKind::Num),
        ("last_update_time", KeyKind::Num),
    ],
    filter_aliases: &[],
    order_entities: &[Entity::Attribute],
    order_entity_names: "attributes",
    order_attrs: &["name", "experiment_id", "creation_time", "last_update_time"],
    order_aliases: &[],
    tag_null_tests: true,
};

static REGISTERED_MODELS: Schema = Schema {
    entities: OTHER_ENTITIES,
    entity_names: "attributes, tags",
    filter_attrs: &[("name", KeyKind::Str)],
    filter_aliases: &[],
    order_entities: &[Entity::Attribute],
    order_entity_names: "attributes",
    order_attrs: &["name", "creation_timestamp", "last_updated_timestamp"],
    order_aliases: &[("timestamp", "creation_timestamp")],
    tag_null_tests: false,
};

static MODEL_VERSIONS: Schema = Schema {
    entities: OTHER_ENTITIES,
    entity_names: "attributes, tags",
    filter_attrs: &[
        ("name", KeyKind::Str),
        ("run_id", KeyKind::StrOrList),
        ("source_path", KeyKind::Str),
        ("version_number", KeyKind::Num),
    ],
    filter_aliases: &[],
    order_entities: &[Entity::Attribute],
    order_entity_names: "attributes",
    order_attrs: &[
        "name",
        "version_number",
        "creation_timestamp",
        "last_updated_timestamp",
    ],
    order_aliases: &[],
    tag_null_tests: false,
};

const LOGGED_MODEL_ENTITIES: &[(&str, Entity)] = &[
    ("metric", Entity::Metric),
    ("metrics", Entity::Metric),
    ("param", Entity::Param),
    ("params", Entity::Param),
    TAG_ALIASES[0],
    TAG_ALIASES[1],
    ATTRIBUTE_ALIASES[0],
    ATTRIBUTE_ALIASES[1],
    ATTRIBUTE_ALIASES[2],
];

/// MLflow's aliases for logged-model timestamps (the UI orders by `creation_time`).
const LOGGED_MODEL_ALIASES: &[(&str, &str)] = &[
    ("creation_time", "creation_timestamp"),
    ("creation_timestamp_ms", "creation_timestamp"),
    ("last_updated_timestamp_ms", "last_updated_timestamp"),
];

static LOGGED_MODELS: Schema = Schema {
    entities: LOGGED_MODEL_ENTITIES,
    entity_names: "metrics, params, tags, attributes",
    filter_attrs: &[
        ("name", KeyKind::Str),
        ("model_id", KeyKind::StrOrList),
        ("source_run_id", KeyKind::StrOrList),
        ("status", KeyKind::Str),
        ("model_type", KeyKind::Str),
        ("creation_timestamp", KeyKind::Num),
        ("last_updated_timestamp", KeyKind::Num),
    ],
    filter_aliases: LOGGED_MODEL_ALIASES,
    order_entities: &[Entity::Metric, Entity::Attribute],
    order_entity_names: "metrics, attributes",
    order_attrs: &[
        "name",
        "model_id",
        "experiment_id",
        "model_type",
        "status",
        "source_run_id",
        "creation_timestamp",
        "last_updated_timestamp",
    ],
    order_aliases: LOGGED_MODEL_ALIASES,
    tag_null_tests: false,
};

const NUMERIC_CMPS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Gt,
    Comparator::Ge,
    Comparator::Lt,
    Comparator::Le,
];
const STRING_CMPS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
];
const STRING_LIST_CMPS: &[Comparator] = &[
    Comparator::Eq,
    Comparator::Ne,
    Comparator::Like,
    Comparator::ILike,
    Comparator::In,
    Comparator::NotIn,
];

fn comparator_str(cmp: Comparator) -> &'static str {
    match cmp {
        Comparator::Eq => "=",
        Comparator::Ne => "!=",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Like => "LIKE",
        Comparator::ILike => "ILIKE",
        Comparator::In => "IN",
        Comparator::NotIn => "NOT IN",
        Comparator::IsNull => "IS NULL",
        Comparator::IsNotNull => "IS NOT NULL",
    }
}

fn entity_noun(entity: Entity) -> &'static str {
    match entity {
        Entity::Metric => "metric",
        Entity::Param => "param",
        Entity::Tag => "tag",
        Entity::Attribute => "attribute",
        Entity::Dataset => "dataset field",
    }
}

// === cursor ===

/// A position in the input; always on a char boundary.
struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn at_end(&self) -> bool {
        self.rest().is_empty()
    }

    /// Consumes a bare word (`[alphanumeric_]+`), if one starts here.
    fn eat_word(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        let len = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        self.pos += len;
        rest.get(..len)
    }

    /// Character offset of the cursor, for messages.
    fn position(&self) -> usize {
        self.src.get(..self.pos).map_or(self.pos, |s| s.chars().count())
    }

    fn since(&self, start: usize) -> &'a str {
        self.src.get(start..self.pos).unwrap_or_default()
    }

    /// Describes the next token for an error message without consuming it.
    fn describe_next(&self) -> String {
        let rest = self.rest();
        match rest.chars().next() {
            None => "end of input".to_string(),
            Some(c) if is_word_char(c) => {
                let word: String = rest.chars().take_while(|c| is_word_char(*c)).collect();
                format!("'{}'", snippet(&word))
            }
            Some(c) => format!("'{c}'"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Shortens user input quoted in messages.
fn snippet(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push_str("...");
        out
    }
}

fn join_comparators(cmps: &[Comparator]) -> String {
    cmps.iter()
        .map(|c| comparator_str(*c))
        .collect::<Vec<_>>()
        .join(", ")
}

// === lexing ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

/// A value as written, before it is checked against the key's type.
#[derive(Debug, Clone, PartialEq)]
enum RawValue {
    /// The parsed number and its source text.
    Number(f64, String),
    Str(String, Quote),
    List(Vec<String>),
    /// An unquoted word such as `abc` or `true`.
    Bare(String),
}

impl RawValue {
    fn describe(&self) -> String {
        match self {
            Self::Number(_, text) => format!("number {}", snippet(text)),
            Self::Str(s, Quote::Single) => format!("string '{}'", snippet(s)),
            Self::Str(s, Quote::Double) => format!("string \"{}\"", snippet(s)),
            Self::List(_) => "a list".to_string(),
            Self::Bare(w) => format!("unquoted '{}'", snippet(w)),
        }
    }
}

struct KeyPart {
    text: String,
    quoted: bool,
}

/// A dotted key as written: `tags."mlflow.runName"` is two parts.
struct RawKey {
    parts: Vec<KeyPart>,
    text: String,
}

/// Reads a string or identifier delimited by `quote`; a doubled quote stands for itself.
fn read_quoted(cur: &mut Cursor<'_>, quote: char) -> Result<String, String> {
    let start = cur.position();
    cur.bump();
    let mut out = String::new();
    loop {
        match cur.bump() {
            None => {
                let what = match quote {
                    '`' => "backtick-quoted identifier",
                    '"' => "double-quoted string",
                    _ => "string literal",
                };
                return Err(format!("unterminated {what} starting at position {start}"));
            }
            Some(c) if c == quote => {
                if cur.eat(quote) {
                    out.push(quote);
                } else {
                    return Ok(out);
                }
            }
            Some(c) => out.push(c),
        }
    }
}

fn parse_key(cur: &mut Cursor<'_>) -> Result<RawKey, String> {
    let start = cur.pos;
    let mut parts = Vec::new();
    loop {
        let at = cur.position();
        match cur.peek() {
            Some(q @ ('`' | '"')) => {
                let text = read_quoted(cur, q)?;
                if text.is_empty() {
                    return Err(format!("empty quoted identifier at position {at}"));
                }
                parts.push(KeyPart { text, quoted: true });
            }
            Some(c) if is_word_char(c) => {
                let word = cur.eat_word().unwrap_or_default();
                parts.push(KeyPart {
                    text: word.to_string(),
                    quoted: false,
                });
            }
            Some('(') if parts.is_empty() => {
                return Err(format!(
                    "parentheses are not supported (position {at}); clauses can only be joined with AND"
                ));
            }
            Some('\'') => {
                return Err(format!(
                    "expected a key at position {at}, found a single-quoted string; \
                     quote keys with double quotes or backticks"
                ));
            }
            _ if !parts.is_empty() => {
                return Err(format!(
                    "expected a key after '.' at position {at}, found {}",
                    cur.describe_next()
                ));
            }
            _ => {
                return Err(format!(
                    "expected a key at position {at}, found {}",
                    cur.describe_next()
                ));
            }
        }
        if !cur.eat('.') {
            break;
        }
    }
    if let [only] = parts.as_slice()
        && !only.quoted
        && ["AND", "OR", "NOT"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&only.text))
    {
        return Err(format!(
            "unexpected keyword '{}' where a key was expected",
            only.text
        ));
    }
    Ok(RawKey {
        parts,
        text: cur.since(start).to_string(),
    })
}

fn parse_comparator(cur: &mut Cursor<'_>, key: &RawKey) -> Result<Comparator, String> {
    let at = cur.position();
    let expected = |found: String, after_word: bool| {
        let hint = if after_word {
            " (keys containing spaces or special characters must be quoted with double quotes or backticks)"
        } else {
            ""
        };
        format!(
            "expected a comparison operator (=, !=, <>, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN) after \
             '{}' at position {at}, found {found}{hint}",
            snippet(&key.text)
        )
    };
    let cmp = match cur.peek() {
        Some('=') => {
            cur.bump();
            if cur.peek() == Some('=') {
                return Err(format!("'==' at position {at} is not supported; use '='"));
            }
            Comparator::Eq
        }
        Some('!') => {
            cur.bump();
            if !cur.eat('=') {
                return Err(format!("expected '!=' at position {at}"));
            }
            Comparator::Ne
        }
        Some('<') => {
            cur.bump();
            if cur.eat('=') {
                Comparator::Le
            } else if cur.eat('>') {
                Comparator::Ne
            } else {
                Comparator::Lt
            }
        }
        Some('>') => {
            cur.bump();
            if cur.eat('=') {
                Comparator::Ge
            } else {
                Comparator::Gt
            }
        }
        Some(c) if is_word_char(c) => {
            let found = cur.describe_next();
            let word = cur.eat_word().unwrap_or_default();
            if word.eq_ignore_ascii_case("like") {
                Comparator::Like
            } else if word.eq_ignore_ascii_case("ilike") {
                Comparator::ILike
            } else if word.eq_ignore_ascii_case("in") {
                Comparator::In
            } else if word.eq_ignore_ascii_case("is") {
                cur.skip_ws();
                let next_at = cur.position();
                let mut word = cur.eat_word();
                let negated = word.is_some_and(|w| w.eq_ignore_ascii_case("not"));
                if negated {
                    cur.skip_ws();
                    word = cur.eat_word();
                }
                match word {
                    Some(w) if w.eq_ignore_ascii_case("null") && negated => Comparator::IsNotNull,
                    Some(w) if w.eq_ignore_ascii_case("null") => Comparator::IsNull,
                    _ => {
                        return Err(format!(
                            "expected NULL or NOT NULL after IS at position {next_at}"
                        ));
                    }
                }
            } else if word.eq_ignore_ascii_case("not") {
                cur.skip_ws();
                let next_at = cur.position();
                match cur.eat_word() {
                    Some(w) if w.eq_ignore_ascii_case("in") => Comparator::NotIn,
                    _ => {
                        return Err(format!(
                            "expected IN after NOT at position {next_at}; NOT IN is the only negated operator"
                        ));
                    }
                }
            } else {
                return Err(expected(found, true));
            }
        }
        _ => return Err(expected(cur.describe_next(), false)),
    };
    Ok(cmp)
}

fn parse_value(cur: &mut Cursor<'_>) -> Result<RawValue, String> {
    let at = cur.position();
    match cur.peek() {
        None => Err(format!("expected a value at position {at}, found end of input")),
        Some('\'') => Ok(RawValue::Str(read_quoted(cur, '\'')?, Quote::Single)),
        Some('"') => Ok(RawValue::Str(read_quoted(cur, '"')?, Quote::Double)),
        Some('(') => parse_list(cur),
        Some(c) if c == '-' || c == '.' || c.is_ascii_digit() => parse_number(cur),
        Some(c) if is_word_char(c) => Ok(RawValue::Bare(cur.eat_word().unwrap_or_default().to_string())),
        Some(c) => Err(format!("expected a value at position {at}, found '{c}'")),
    }
}

fn parse_list(cur: &mut Cursor<'_>) -> Result<RawValue, String> {
    let start = cur.position();
    cur.bump();
    let mut items = Vec::new();
    loop {
        cur.skip_ws();
        let at = cur.position();
        match cur.peek() {
            Some(q @ ('\'' | '"')) => items.push(read_quoted(cur, q)?),
            Some(')') if items.is_empty() => return Err(format!("empty list at position {start}")),
            None => return Err(format!("unterminated list starting at position {start}")),
            _ => {
                return Err(format!(
                    "list items must be quoted strings; found {} at position {at}",
                    cur.describe_next()
                ));
            }
        }
        cur.skip_ws();
        let at = cur.position();
        match cur.bump() {
            Some(',') => {}
            Some(')') => return Ok(RawValue::List(items)),
            None => return Err(format!("unterminated list starting at position {start}")),
            Some(c) => {
                return Err(format!(
                    "expected ',' or ')' in list at position {at}, found '{c}'"
                ));
            }
        }
    }
}

fn parse_number(cur: &mut Cursor<'_>) -> Result<RawValue, String> {
    let start = cur.pos;
    let at = cur.position();
    let invalid = || format!("invalid number at position {at}");
    let eat_digits = |cur: &mut Cursor<'_>| {
        let mut n = 0usize;
        while cur.peek().is_some_and(|c| c.is_ascii_digit()) {
            cur.bump();
            n += 1;
        }
        n
    };
    cur.eat('-');
    let mut digits = eat_digits(cur);
    if cur.eat('.') {
        digits += eat_digits(cur);
    }
    if digits == 0 {
        return Err(invalid());
    }
    if matches!(cur.peek(), Some('e' | 'E')) {
        cur.bump();
        if !cur.eat('-') {
            cur.eat('+');
        }
        if eat_digits(cur) == 0 {
            return Err(invalid());
        }
    }
    if cur.peek().is_some_and(|c| is_word_char(c) || c == '.') {
        return Err(invalid());
    }
    let text = cur.since(start);
    let n: f64 = text.parse().map_err(|_| invalid())?;
    if !n.is_finite() {
        return Err(format!(
            "number {} at position {at} is out of range",
            snippet(text)
        ));
    }
    Ok(RawValue::Number(n, text.to_string()))
}

// === filters ===

fn filter_syntax(detail: String) -> SearchError {
    SearchError(format!("Invalid clause(s) in filter string: {detail}"))
}

fn parse_filter(src: &str, schema: &Schema) -> Result<Vec<Clause>, SearchError> {
    let mut cur = Cursor::new(src);
    let mut clauses = Vec::new();
    cur.skip_ws();
    if cur.at_end() {
        return Ok(clauses);
    }
    loop {
        let key = parse_key(&mut cur).map_err(filter_syntax)?;
        cur.skip_ws();
        let comparator = parse_comparator(&mut cur, &key).map_err(filter_syntax)?;
        cur.skip_ws();
        if matches!(comparator, Comparator::IsNull | Comparator::IsNotNull) {
            clauses.push(build_null_test(schema, &key, comparator)?);
        } else {
            let raw = parse_value(&mut cur).map_err(filter_syntax)?;
            clauses.push(build_clause(schema, &key, comparator, raw)?);
        }

        cur.skip_ws();
        if cur.at_end() {
            return Ok(clauses);
        }
        let at = cur.position();
        let found = cur.describe_next();
        match cur.eat_word() {
            Some(w) if w.eq_ignore_ascii_case("and") => {}
            Some(w) if w.eq_ignore_ascii_case("or") => {
                return Err(filter_syntax(format!(
                    "'{w}' at position {at} is not supported; clauses can only be joined with AND"
                )));
            }
            _ => {
                return Err(filter_syntax(format!(
                    "expected AND or end of filter at position {at}, found {found}"
                )));
            }
        }
        cur.skip_ws();
        if cur.at_end() {
            return Err(filter_syntax(format!(
                "expected a clause after AND at position {at}"
            )));
        }
    }
}

/// Splits off the entity prefix: `tags.mlflow.user` is `(Tag, "mlflow.user")`; no prefix means
/// attribute.
fn resolve_entity(
    entities: &[(&str, Entity)],
    entity_names: &str,
    key: &RawKey,
) -> Result<(Entity, String), SearchError> {
    match key.parts.split_first() {
        None => Err(SearchError("Empty key in search expression".to_string())),
        Some((only, [])) => Ok((Entity::Attribute, only.text.clone())),
        Some((first, rest)) => {
            let prefix = first.text.to_lowercase();
            let entity = entities
                .iter()
                .find(|(alias, _)| *alias == prefix)
                .map(|(_, entity)| *entity)
                .ok_or_else(|| {
                    SearchError(format!(
                        "Invalid entity type '{}' in '{}'. Valid values are: {entity_names}",
                        snippet(&first.text),
                        snippet(&key.text)
                    ))
                })?;
            let name = rest.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join(".");
            Ok((entity, name))
        }
    }
}

/// Resolves `name` through `aliases` (case-insensitive) to a canonical entry of `names`.
fn canonical<T: Copy>(
    name: &str,
    names: &[(&'static str, T)],
    aliases: &[(&str, &'static str)],
) -> Option<(&'static str, T)> {
    let wanted = aliases
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map_or(name, |(_, target)| *target);
    names.iter().find(|(n, _)| *n == wanted).copied()
}

fn key_list<T>(names: &[(&str, T)]) -> String {
    names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// `tags.k IS [NOT] NULL`: tags only, and only where the schema allows it.
fn build_null_test(schema: &Schema, key: &RawKey, comparator: Comparator) -> Result<Clause, SearchError> {
    let (entity, name) = resolve_entity(schema.entities, schema.entity_names, key)?;
    if entity != Entity::Tag || !schema.tag_null_tests {
        return Err(SearchError(format!(
            "Invalid comparator '{}' for {} '{}'; IS NULL and IS NOT NULL are only supported for run and experiment tags",
            comparator_str(comparator),
            entity_noun(entity),
            snippet(&name)
        )));
    }
    Ok(Clause {
        entity,
        key: name,
        comparator,
        value: Value::List(Vec::new()),
    })
}

fn build_clause(
    schema: &Schema,
    key: &RawKey,
    comparator: Comparator,
    raw: RawValue,
) -> Result<Clause, SearchError> {
    let (entity, name) = resolve_entity(schema.entities, schema.entity_names, key)?;
    let (name, kind) = match entity {
        Entity::Metric => (name, KeyKind::Num),
        Entity::Param | Entity::Tag => (name, KeyKind::Str),
        Entity::Attribute => {
            let (canon, kind) =
                canonical(&name, schema.filter_attrs, schema.filter_aliases).ok_or_else(|| {
                    SearchError(format!(
                        "Invalid attribute key '{}' specified. Valid keys are: {}",
                        snippet(&name),
                        key_list(schema.filter_attrs)
                    ))
                })?;
            (canon.to_string(), kind)
        }
        Entity::Dataset => {
            let (canon, kind) = canonical(&name, DATASET_KEYS, &[]).ok_or_else(|| {
                SearchError(format!(
                    "Invalid dataset key '{}' specified. Valid keys are: {}",
                    snippet(&name),
                    key_list(DATASET_KEYS)
                ))
            })?;
            (canon.to_string(), kind)
        }
    };
    let what = format!("{} '{}'", entity_noun(entity), snippet(&name));
    let list_attrs = if entity == Entity::Attribute {
        schema
            .filter_attrs
            .iter()
            .filter(|(_, k)| *k == KeyKind::StrOrList)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    let value = check_value(&what, kind, &list_attrs, comparator, raw)?;
    Ok(Clause {
        entity,
        key: name,
        comparator,
        value,
    })
}

fn check_value(
    what: &str,
    kind: KeyKind,
    list_attrs: &str,
    comparator: Comparator,
    raw: RawValue,
) -> Result<Value, SearchError> {
    let allowed = match kind {
        KeyKind::Num => NUMERIC_CMPS,
        KeyKind::Str => STRING_CMPS,
        KeyKind::StrOrList => STRING_LIST_CMPS,
    };
    if !allowed.contains(&comparator) {
        let mut msg = format!(
            "Invalid comparator '{}' for {what}; expected one of: {}",
            comparator_str(comparator),
            join_comparators(allowed)
        );
        if matches!(comparator, Comparator::In | Comparator::NotIn)
            && kind == KeyKind::Str
            && !list_attrs.is_empty()
        {
            let _ = write!(msg, " (IN and NOT IN are only supported for: {list_attrs})");
        }
        return Err(SearchError(msg));
    }
    match (kind, comparator, raw) {
        (KeyKind::Num, _, RawValue::Number(n, _)) => Ok(Value::Number(n)),
        (KeyKind::Num, _, other) => Err(SearchError(format!(
            "Expected an unquoted numeric value for {what}, found {}",
            other.describe()
        ))),
        (_, Comparator::In | Comparator::NotIn, RawValue::List(items)) => Ok(Value::List(items)),
        (_, Comparator::In | Comparator::NotIn, other) => Err(SearchError(format!(
            "Expected a list of quoted strings such as ('a', 'b') after {} for {what}, found {}",
            comparator_str(comparator),
            other.describe()
        ))),
        (_, _, RawValue::Str(s, _)) => Ok(Value::String(s)),
        (_, _, other) => Err(SearchError(format!(
            "Expected a quoted string value for {what}, found {}; quote string values with single \
             quotes, e.g. 'value'",
            other.describe()
        ))),
    }
}

// === order_by ===

fn parse_order_by(src: &str, schema: &Schema) -> Result<OrderBy, SearchError> {
    let syntax = |detail: String| {
        SearchError(format!(
            "Invalid order_by clause '{}': {detail}",
            snippet(src.trim())
        ))
    };
    let mut cur = Cursor::new(src);
    cur.skip_ws();
    if cur.at_end() {
        return Err(syntax("expected '<entity>.<key> [ASC|DESC]'".to_string()));
    }
    let key = parse_key(&mut cur).map_err(syntax)?;
    cur.skip_ws();
    let mut ascending = true;
    if !cur.at_end() {
        let at = cur.position();
        let found = cur.describe_next();
        match cur.eat_word() {
            Some(w) if w.eq_ignore_ascii_case("asc") => {}
            Some(w) if w.eq_ignore_ascii_case("desc") => ascending = false,
            _ => {
                return Err(syntax(format!(
                    "expected ASC or DESC at position {at}, found {found}"
                )));
            }
        }
        cur.skip_ws();
        if !cur.at_end() {
            return Err(syntax(format!(
                "unexpected {} at position {} after the sort direction (pass one order_by entry per \
                 clause)",
                cur.describe_next(),
                cur.position()
            )));
        }
    }
    let (entity, name) = resolve_entity(schema.entities, schema.order_entity_names, &key)?;
    if !schema.order_entities.contains(&entity) {
        return Err(SearchError(format!(
            "Invalid order_by entity '{}' in '{}'. Valid values are: {}",
            key.parts.first().map_or("", |p| p.text.as_str()),
            snippet(&key.text),
            schema.order_entity_names
        )));
    }
    let key = if entity == Entity::Attribute {
        let names: Vec<(&'static str, ())> = schema.order_attrs.iter().map(|n| (*n, ())).collect();
        let (canon, ()) = canonical(&name, &names, schema.order_aliases).ok_or_else(|| {
            SearchError(format!(
                "Invalid order_by attribute key '{}' specified. Valid keys are: {}",
                snippet(&name),
                schema.order_attrs.join(", ")
            ))
        })?;
        canon.to_string()
    } else {
        name
    };
    Ok(OrderBy {
        entity,
        key,
        ascending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(entity: Entity, key: &str, comparator: Comparator, value: Value) -> Clause {
        Clause {
            entity,
            key: key.to_string(),
            comparator,
            value,
        }
    }

    fn num(n: f64) -> Value {
        Value::Number(n)
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|i| i.to_string()).collect())
    }

    fn one(filter: &str) -> Clause {
        let clauses = parse_run_filter(filter).unwrap_or_else(|e| panic!("{filter:?}: {e}"));
        assert_eq!(clauses.len(), 1, "{filter:?}");
        clauses.into_iter().next().unwrap()
    }

    fn run_err(filter: &str) -> String {
        match parse_run_filter(filter) {
            Ok(c) => panic!("{filter:?} parsed to {c:?}"),
            Err(e) => e.0,
        }
    }

    fn ob(entity: Entity, key: &str, ascending: bool) -> OrderBy {
        OrderBy {
            entity,
            key: key.to_string(),
            ascending,
        }
    }

    // --- runs: basics ---

    #[test]
    fn empty_filter_is_no_clauses() {
        for f in ["", " ", "\t\n  "] {
            assert_eq!(parse_run_filter(f), Ok(vec![]));
            assert_eq!(parse_experiment_filter(f), Ok(vec![]));
            assert_eq!(parse_registered_model_filter(f), Ok(vec![]));
            assert_eq!(parse_model_version_filter(f), Ok(vec![]));
        }
    }

    #[test]
    fn metric_clauses() {
        use Comparator::*;
        assert_eq!(one("metrics.rmse < 0.5"), c(Entity::Metric, "rmse", Lt, num(0.5)));
        assert_eq!(
            one("metric.acc >= -1e-3"),
            c(Entity::Metric, "acc", Ge, num(-1e-3))
        );
        assert_eq!(one("metrics.acc>0.9"), c(Entity::Metric, "acc", Gt, num(0.9)));
        assert_eq!(one("metrics.a = 3"), c(Entity::Metric, "a", Eq, num(3.0)));
        assert_eq!(one("metrics.a != 3"), c(Entity::Metric, "a", Ne, num(3.0)));
        assert_eq!(one("metrics.a <> 3"), c(Entity::Metric, "a", Ne, num(3.0)));
        assert_eq!(one("metrics.a <= 1E5"), c(Entity::Metric, "a", Le, num(1e5)));
        assert_eq!(one("metrics.a = .5"), c(Entity::Metric, "a", Eq, num(0.5)));
        assert_eq!(one("metrics.a = -.5"), c(Entity::Metric, "a", Eq, num(-0.5)));
        assert_eq!(one("metrics.a = 5."), c(Entity::Metric, "a", Eq, num(5.0)));
        assert_eq!(one("metrics.a = 2.5e+2"), c(Entity::Metric, "a", Eq, num(250.0)));
        assert_eq!(one("metrics.a = -7"), c(Entity::Metric, "a", Eq, num(-7.0)));
        assert_eq!(one("metrics.1st = 1"), c(Entity::Metric, "1st", Eq, num(1.0)));
    }

    #[test]
    fn quoted_keys() {
        use Comparator::*;
        assert_eq!(
            one(r#"metrics."my metric" > 1"#),
            c(Entity::Metric, "my metric", Gt, num(1.0))
        );
        assert_eq!(
            one("metrics.`my-metric` > 1"),
            c(Entity::Metric, "my-metric", Gt, num(1.0))
        );
        assert_eq!(one("`metrics`.acc > 1"), c(Entity::Metric, "acc", Gt, num(1.0)));
        assert_eq!(
            one(r#""metrics"."a b" > 1"#),
            c(Entity::Metric, "a b", Gt, num(1.0))
        );
        assert_eq!(
            one("tags.`extra-key` != 'v'"),
            c(Entity::Tag, "extra-key", Ne, s("v"))
        );
        assert_eq!(
            one(r#"tags."mlflow.runName" = 'x'"#),
            c(Entity::Tag, "mlflow.runName", Eq, s("x"))
        );
        assert_eq!(one("tags.`a``b` = 'x'"), c(Entity::Tag, "a`b", Eq, s("x")));
        assert_eq!(one(r#"tags."a""b" = 'x'"#), c(Entity::Tag, "a\"b", Eq, s("x")));
        assert_eq!(one(r#"tags."a"LIKE'x'"#), c(Entity::Tag, "a", Like, s("x")));
    }

    #[test]
    fn dotted_keys_split_at_first_dot() {
        use Comparator::*;
        assert_eq!(
            one("tags.mlflow.user = 'alice'"),
            c(Entity::Tag, "mlflow.user", Eq, s("alice"))
        );
        assert_eq!(one("params.a.b.c = '1'"), c(Entity::Param, "a.b.c", Eq, s("1")));
        assert_eq!(one("tags.`a.b`.c = '1'"), c(Entity::Tag, "a.b.c", Eq, s("1")));
    }

    #[test]
    fn param_and_tag_clauses() {
        use Comparator::*;
        assert_eq!(one("params.lr = '0.01'"), c(Entity::Param, "lr", Eq, s("0.01")));
        assert_eq!(one("param.lr != '0.01'"), c(Entity::Param, "lr", Ne, s("0.01")));
        assert_eq!(
            one("parameter.opt LIKE 'ad%'"),
            c(Entity::Param, "opt", Like, s("ad%"))
        );
        assert_eq!(
            one("parameters.opt ILIKE '%AM'"),
            c(Entity::Param, "opt", ILike, s("%AM"))
        );
        assert_eq!(one(r#"params.x = "abc""#), c(Entity::Param, "x", Eq, s("abc")));
        assert_eq!(one("tag.x = ''"), c(Entity::Tag, "x", Eq, s("")));
        assert_eq!(one("tags.x like 'a_b'"), c(Entity::Tag, "x", Like, s("a_b")));
        assert_eq!(one("tags.x iLiKe 'a'"), c(Entity::Tag, "x", ILike, s("a")));
        assert_eq!(one("PARAMS.x = 'a'"), c(Entity::Param, "x", Eq, s("a")));
    }

    #[test]
    fn string_escapes() {
        use Comparator::*;
        assert_eq!(one("tags.x = 'it''s'"), c(Entity::Tag, "x", Eq, s("it's")));
        assert_eq!(
            one(r#"tags.x = "say ""hi""""#),
            c(Entity::Tag, "x", Eq, s("say \"hi\""))
        );
        assert_eq!(one(r"tags.x LIKE 'a\_b'"), c(Entity::Tag, "x", Like, s(r"a\_b")));
        assert_eq!(one("tags.x = 'ünï cödé'"), c(Entity::Tag, "x", Eq, s("ünï cödé")));
        assert_eq!(one("tags.x = 'a AND b'"), c(Entity::Tag, "x", Eq, s("a AND b")));
        // A backslash does not escape: the string ends at the second quote.
        assert!(run_err(r"tags.x = 'it\'s'").contains("Invalid clause(s) in filter string"));
    }

    #[test]
    fn run_attributes() {
        use Comparator::*;
        assert_eq!(
            one("status = 'FINISHED'"),
            c(Entity::Attribute, "status", Eq, s("FINISHED"))
        );
        assert_eq!(
            one("attributes.run_name LIKE 'foo%'"),
            c(Entity::Attribute, "run_name", Like, s("foo%"))
        );
        assert_eq!(
            one("attribute.user_id ILIKE '%bob%'"),
            c(Entity::Attribute, "user_id", ILike, s("%bob%"))
        );
        assert_eq!(
            one("attr.artifact_uri != 's3://x'"),
            c(Entity::Attribute, "artifact_uri", Ne, s("s3://x"))
        );
        assert_eq!(
            one("run.run_id = 'abc'"),
            c(Entity::Attribute, "run_id", Eq, s("abc"))
        );
        assert_eq!(
            one(r#"attributes."run name" = 'x'"#),
            c(Entity::Attribute, "run_name", Eq, s("x"))
        );
        assert_eq!(
            one(r#""run name" = 'x'"#),
            c(Entity::Attribute, "run_name", Eq, s("x"))
        );
        assert_eq!(
            one("`Run Name` = 'x'"),
            c(Entity::Attribute, "run_name", Eq, s("x"))
        );
        assert_eq!(
            one(r#"run_name = "x""#),
            c(Entity::Attribute, "run_name", Eq, s("x"))
        );
        assert_eq!(
            one("created > 100"),
            c(Entity::Attribute, "start_time", Gt, num(100.0))
        );
        assert_eq!(
            one("attributes.Created > 100"),
            c(Entity::Attribute, "start_time", Gt, num(100.0))
        );
        assert_eq!(
            one("start_time >= 1"),
            c(Entity::Attribute, "start_time", Ge, num(1.0))
        );
        assert_eq!(
            one("attribute.end_time <= 5"),
            c(Entity::Attribute, "end_time", Le, num(5.0))
        );
        assert_eq!(
            one("run_id IN ('a', 'b')"),
            c(Entity::Attribute, "run_id", In, list(&["a", "b"]))
        );
        assert_eq!(
            one("attributes.run_id not in ('a')"),
            c(Entity::Attribute, "run_id", NotIn, list(&["a"]))
        );
        assert_eq!(
            one(r#"run_id IN("a",'b' ,  'c')"#),
            c(Entity::Attribute, "run_id", In, list(&["a", "b", "c"]))
        );
        // Upper-case ids are kept; the store decides what to do with them.
        assert_eq!(
            one("run_id IN ('ABC')"),
            c(Entity::Attribute, "run_id", In, list(&["ABC"]))
        );
    }

    #[test]
    fn datasets() {
        use Comparator::*;
        assert_eq!(
            one("datasets.name = 'ds'"),
            c(Entity::Dataset, "name", Eq, s("ds"))
        );
        assert_eq!(
            one("dataset.digest IN ('a','b')"),
            c(Entity::Dataset, "digest", In, list(&["a", "b"]))
        );
        assert_eq!(
            one("datasets.context NOT IN ('train')"),
            c(Entity::Dataset, "context", NotIn, list(&["train"]))
        );
        assert_eq!(
            one("datasets.name LIKE 'd%'"),
            c(Entity::Dataset, "name", Like, s("d%"))
        );
        assert_eq!(
            one("datasets.name ILIKE 'D%'"),
            c(Entity::Dataset, "name", ILike, s("D%"))
        );
        assert_eq!(
            one("datasets.name != 'x'"),
            c(Entity::Dataset, "name", Ne, s("x"))
        );
        let e = run_err("datasets.profile = 'x'");
        assert!(
            e.contains("'profile'") && e.contains("name, digest, context"),
            "{e}"
        );
        assert!(run_err("datasets.name > 'x'").contains("Invalid comparator '>'"));
    }

    #[test]
    fn and_joins_case_insensitively() {
        let f = "metrics.a > 1 and params.b = 'x' AND tags.c LIKE '%y' And status = 'RUNNING'";
        let got = parse_run_filter(f).unwrap();
        assert_eq!(
            got,
            vec![
                c(Entity::Metric, "a", Comparator::Gt, num(1.0)),
                c(Entity::Param, "b", Comparator::Eq, s("x")),
                c(Entity::Tag, "c", Comparator::Like, s("%y")),
                c(Entity::Attribute, "status", Comparator::Eq, s("RUNNING")),
            ]
        );
        assert_eq!(
            parse_run_filter("  params.b='x'AND tags.c='y'  ").unwrap().len(),
            2
        );
        assert_eq!(
            parse_run_filter("run_id IN ('a')AND metrics.x=1").unwrap().len(),
            2
        );
    }

    // --- runs: errors ---

    #[test]
    fn or_and_grouping_are_rejected() {
        let e = run_err("metrics.a > 1 OR metrics.b > 2");
        assert!(
            e.starts_with("Invalid clause(s) in filter string") && e.contains("'OR'"),
            "{e}"
        );
        assert!(run_err("metrics.a > 1 or metrics.b > 2").contains("'or'"));
        let e = run_err("(metrics.a > 1)");
        assert!(e.contains("parentheses"), "{e}");
        let e = run_err("metrics.a > 1 AND (metrics.b > 2)");
        assert!(e.contains("parentheses"), "{e}");
    }

    #[test]
    fn trailing_leading_and_garbage() {
        let e = run_err("metrics.a > 1 AND");
        assert!(e.contains("expected a clause after AND"), "{e}");
        assert!(run_err("metrics.a > 1 AND   ").contains("after AND"));
        assert!(run_err("AND metrics.a > 1").contains("unexpected keyword 'AND'"));
        assert!(run_err("metrics.a > 1 metrics.b > 2").contains("expected AND"));
        assert!(run_err("metrics.a > 1;").contains("expected AND or end of filter"));
        assert!(run_err("metrics.a > 1 AND AND metrics.b > 1").contains("unexpected keyword"));
        assert!(run_err("metrics.a > 1 ANDmetrics.b > 1").contains("expected AND"));
        assert!(run_err("metrics.a").contains("expected a comparison operator"));
        assert!(run_err("metrics.a >").contains("expected a value"));
        assert!(run_err("metrics. > 1").contains("after '.'"));
        assert!(run_err("metrics.a ! 1").contains("'!='"));
        assert!(run_err("metrics.a == 1").contains("'=='"));
        assert!(run_err("tags.a NOT LIKE 'x'").contains("expected IN after NOT"));
        assert!(run_err("= 1").contains("expected a key"));
        assert!(run_err("'tags.a' = 'x'").contains("double quotes or backticks"));
        assert!(run_err(r#"tags."" = 'x'"#).contains("empty quoted identifier"));
        assert!(run_err("tags.a ~ 'x'").contains("expected a comparison operator"));
    }

    #[test]
    fn unquoted_key_with_space_gets_hint() {
        let e = run_err("metrics.my metric > 1");
        assert!(
            e.contains("found 'metric'") && e.contains("must be quoted"),
            "{e}"
        );
    }

    #[test]
    fn value_type_errors() {
        let e = run_err("params.x = abc");
        assert!(
            e.contains("quoted string value for param 'x'") && e.contains("unquoted 'abc'"),
            "{e}"
        );
        assert!(run_err("params.x = 1").contains("found number 1"));
        assert!(run_err("status = FINISHED").contains("quoted string value for attribute 'status'"));
        let e = run_err("metrics.x = '1'");
        assert!(
            e.contains("numeric value for metric 'x'") && e.contains("string '1'"),
            "{e}"
        );
        assert!(run_err(r#"metrics.x = "1""#).contains("numeric value for metric"));
        assert!(run_err("metrics.x = abc").contains("numeric value for metric"));
        assert!(run_err("start_time > '5'").contains("numeric value for attribute 'start_time'"));
        assert!(run_err("params.x = ('a')").contains("found a list"));
        let e = run_err("run_id IN 'a'");
        assert!(e.contains("list of quoted strings"), "{e}");
        assert!(run_err("run_id = ('a', 'b')").contains("found a list"));
    }

    #[test]
    fn tag_null_tests() {
        let f = parse_experiment_filter("tags.`mlflow.experiment.isGateway` IS NULL").unwrap();
        assert_eq!(f[0].entity, Entity::Tag);
        assert_eq!(f[0].key, "mlflow.experiment.isGateway");
        assert_eq!(f[0].comparator, Comparator::IsNull);
        let f = parse_run_filter("tags.team is not null AND params.a = '1'").unwrap();
        assert_eq!(f[0].comparator, Comparator::IsNotNull);
        assert_eq!(f[1].entity, Entity::Param);
        assert!(parse_run_filter("params.a IS NULL").is_err());
        assert!(parse_run_filter("tags.a IS 'x'").is_err());
        assert!(parse_run_filter("tags.a IS NOT").is_err());
        assert!(parse_registered_model_filter("tags.a IS NULL").is_err());
    }

    #[test]
    fn comparator_errors() {
        let e = run_err("metrics.x LIKE '1'");
        assert!(
            e.contains("Invalid comparator 'LIKE' for metric 'x'") && e.contains(">="),
            "{e}"
        );
        assert!(run_err("params.x > 'a'").contains("Invalid comparator '>' for param 'x'"));
        assert!(run_err("tags.x IN ('a')").contains("Invalid comparator 'IN' for tag 'x'"));
        assert!(run_err("start_time LIKE '1'").contains("Invalid comparator 'LIKE'"));
        let e = run_err("status IN ('RUNNING')");
        assert!(
            e.contains("Invalid comparator 'IN' for attribute 'status'") && e.contains("run_id"),
            "{e}"
        );
        assert!(run_err("status NOT IN ('RUNNING')").contains("'NOT IN'"));
    }

    #[test]
    fn unknown_attribute_and_entity() {
        let e = run_err("foo = 'x'");
        assert!(e.contains("Invalid attribute key 'foo'"), "{e}");
        for name in [
            "run_id",
            "run_name",
            "status",
            "user_id",
            "artifact_uri",
            "start_time",
            "end_time",
        ] {
            assert!(e.contains(name), "{e} lacks {name}");
        }
        assert!(run_err("attributes.RUN_ID = 'x'").contains("Invalid attribute key"));
        let e = run_err("foo.bar = 'x'");
        assert!(
            e.contains("Invalid entity type 'foo'") && e.contains("metrics, params"),
            "{e}"
        );
        assert!(run_err("mlflow.user = 'x'").contains("Invalid entity type"));
        assert!(run_err("metrics = 1").contains("Invalid attribute key 'metrics'"));
    }

    #[test]
    fn unterminated_quotes() {
        assert!(run_err("tags.x = 'abc").contains("unterminated string literal"));
        assert!(run_err(r#"tags.x = "abc"#).contains("unterminated double-quoted string"));
        assert!(run_err("tags.`abc = 'x'").contains("unterminated backtick-quoted identifier"));
        assert!(run_err(r#"tags."abc = 'x'"#).contains("unterminated"));
        assert!(run_err("run_id IN ('a'").contains("unterminated list"));
        assert!(run_err("run_id IN ('a', 'b").contains("unterminated string"));
        assert!(run_err("run_id IN (").contains("unterminated list"));
    }

    #[test]
    fn list_errors() {
        assert!(run_err("run_id IN ()").contains("empty list"));
        assert!(run_err("run_id IN (1, 2)").contains("list items must be quoted strings"));
        assert!(run_err("run_id IN ('a',)").contains("list items must be quoted strings"));
        assert!(run_err("run_id IN ('a' 'b')").contains("expected ',' or ')'"));
    }

    #[test]
    fn number_errors() {
        for f in [
            "metrics.a = 1.2.3",
            "metrics.a = 1e",
            "metrics.a = --1",
            "metrics.a = 1abc",
            "metrics.a = -",
        ] {
            assert!(run_err(f).contains("invalid number"), "{f}");
        }
        assert!(run_err("metrics.a = 1e999").contains("out of range"));
        assert!(run_err("metrics.a = +1").contains("expected a value"));
    }

    #[test]
    fn error_positions_count_characters() {
        let e = run_err("tags.ü = 'x' OR 1");
        assert!(e.contains("position 13"), "{e}");
    }

    #[test]
    fn long_input_is_truncated_in_messages() {
        let key = "k".repeat(500);
        let e = run_err(&format!("{key} = 'x'"));
        assert!(e.len() < 300, "{e}");
        assert!(e.contains("..."));
    }

    // --- runs: order_by ---

    #[test]
    fn run_order_by() {
        let p = |s: &str| parse_run_order_by(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(p("metrics.rmse DESC"), ob(Entity::Metric, "rmse", false));
        assert_eq!(p("metrics.rmse"), ob(Entity::Metric, "rmse", true));
        assert_eq!(p("  metrics.rmse asc  "), ob(Entity::Metric, "rmse", true));
        assert_eq!(
            p("attributes.start_time"),
            ob(Entity::Attribute, "start_time", true)
        );
        assert_eq!(p("start_time desc"), ob(Entity::Attribute, "start_time", false));
        assert_eq!(p("params.lr ASC"), ob(Entity::Param, "lr", true));
        assert_eq!(p("param.lr"), ob(Entity::Param, "lr", true));
        assert_eq!(p("tags.x Desc"), ob(Entity::Tag, "x", false));
        assert_eq!(p("tags.mlflow.user"), ob(Entity::Tag, "mlflow.user", true));
        assert_eq!(p("created"), ob(Entity::Attribute, "start_time", true));
        assert_eq!(p("attr.created DESC"), ob(Entity::Attribute, "start_time", false));
        assert_eq!(
            p(r#"attributes."run name""#),
            ob(Entity::Attribute, "run_name", true)
        );
        assert_eq!(p("`Run name` DESC"), ob(Entity::Attribute, "run_name", false));
        assert_eq!(p("run_name"), ob(Entity::Attribute, "run_name", true));
        assert_eq!(p("end_time"), ob(Entity::Attribute, "end_time", true));
        assert_eq!(
            p("metrics.`my metric` DESC"),
            ob(Entity::Metric, "my metric", false)
        );
        assert_eq!(
            p(r#"metrics."my metric"DESC"#),
            ob(Entity::Metric, "my metric", false)
        );
    }

    #[test]
    fn run_order_by_errors() {
        let e = |s: &str| parse_run_order_by(s).unwrap_err().0;
        assert!(e("").contains("Invalid order_by clause"));
        assert!(e("   ").contains("expected '<entity>.<key> [ASC|DESC]'"));
        assert!(e("metrics.rmse SIDEWAYS").contains("expected ASC or DESC"));
        assert!(e("metrics.rmse DESC extra").contains("unexpected 'extra'"));
        assert!(e("metrics.a, metrics.b").contains("expected ASC or DESC"));
        assert!(e("metrics.a DESC, metrics.b").contains("unexpected ','"));
        assert!(e("datasets.name").contains("Invalid order_by entity 'datasets'"));
        let msg = e("attributes.foo");
        assert!(
            msg.contains("Invalid order_by attribute key 'foo'") && msg.contains("start_time"),
            "{msg}"
        );
        assert!(e("foo.bar").contains("Invalid entity type 'foo'"));
        assert!(e("metrics.a DESC DESC").contains("unexpected"));
        assert!(e("metrics.`a").contains("unterminated"));
    }

    // --- experiments ---

    #[test]
    fn experiment_filter() {
        use Comparator::*;
        let p = |s: &str| parse_experiment_filter(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(p("name = 'x'"), vec![c(Entity::Attribute, "name", Eq, s("x"))]);
        assert_eq!(
            p("attribute.name LIKE 'x%'"),
            vec![c(Entity::Attribute, "name", Like, s("x%"))]
        );
        assert_eq!(
            p("attributes.name ILIKE 'X%'"),
            vec![c(Entity::Attribute, "name", ILike, s("X%"))]
        );
        assert_eq!(
            p("attr.name != 'x'"),
            vec![c(Entity::Attribute, "name", Ne, s("x"))]
        );
        assert_eq!(p("tags.k = 'v'"), vec![c(Entity::Tag, "k", Eq, s("v"))]);
        assert_eq!(
            p("tag.`a b` LIKE 'v%'"),
            vec![c(Entity::Tag, "a b", Like, s("v%"))]
        );
        assert_eq!(
            p("creation_time > 1 and last_update_time <= 2"),
            vec![
                c(Entity::Attribute, "creation_time", Gt, num(1.0)),
                c(Entity::Attribute, "last_update_time", Le, num(2.0)),
            ]
        );
    }

    #[test]
    fn experiment_filter_errors() {
        let e = |s: &str| parse_experiment_filter(s).unwrap_err().0;
        let msg = e("metrics.x > 1");
        assert!(
            msg.contains("Invalid entity type 'metrics'") && msg.contains("attributes, tags"),
            "{msg}"
        );
        assert!(e("params.x = 'a'").contains("Invalid entity type"));
        assert!(e("run.name = 'a'").contains("Invalid entity type 'run'"));
        assert!(e("experiment_id = '1'").contains("Invalid attribute key 'experiment_id'"));
        assert!(e("name > 'a'").contains("Invalid comparator"));
        assert!(e("name IN ('a')").contains("Invalid comparator 'IN'"));
        assert!(e("creation_time > '1'").contains("numeric value"));
        assert!(e("name = x").contains("quoted string"));
        assert!(e("name = 'a' OR name = 'b'").contains("'OR'"));
    }

    #[test]
    fn experiment_order_by() {
        let p = |s: &str| parse_experiment_order_by(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(p("name"), ob(Entity::Attribute, "name", true));
        assert_eq!(
            p("experiment_id DESC"),
            ob(Entity::Attribute, "experiment_id", false)
        );
        assert_eq!(
            p("attribute.creation_time DESC"),
            ob(Entity::Attribute, "creation_time", false)
        );
        assert_eq!(
            p("last_update_time asc"),
            ob(Entity::Attribute, "last_update_time", true)
        );
        let e = |s: &str| parse_experiment_order_by(s).unwrap_err().0;
        assert!(e("tags.x").contains("Invalid order_by entity 'tags'"));
        assert!(e("metrics.x").contains("Invalid entity type 'metrics'"));
        assert!(e("foo").contains("Invalid order_by attribute key 'foo'"));
        assert!(e("name sideways").contains("expected ASC or DESC"));
    }

    // --- registered models ---

    #[test]
    fn registered_model_filter() {
        use Comparator::*;
        let p = |s: &str| parse_registered_model_filter(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(
            p("name LIKE '%a%'"),
            vec![c(Entity::Attribute, "name", Like, s("%a%"))]
        );
        assert_eq!(p("name = 'm'"), vec![c(Entity::Attribute, "name", Eq, s("m"))]);
        assert_eq!(p("tags.k = 'v'"), vec![c(Entity::Tag, "k", Eq, s("v"))]);
        assert_eq!(p("tag.k != 'v'"), vec![c(Entity::Tag, "k", Ne, s("v"))]);
        let e = |s: &str| parse_registered_model_filter(s).unwrap_err().0;
        assert!(e("version_number = 1").contains("Invalid attribute key 'version_number'"));
        assert!(e("name IN ('a')").contains("Invalid comparator 'IN'"));
        assert!(e("metrics.a > 1").contains("Invalid entity type"));
    }

    #[test]
    fn registered_model_order_by() {
        let p = |s: &str| parse_registered_model_order_by(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(p("name"), ob(Entity::Attribute, "name", true));
        assert_eq!(
            p("timestamp DESC"),
            ob(Entity::Attribute, "creation_timestamp", false)
        );
        assert_eq!(
            p("creation_timestamp"),
            ob(Entity::Attribute, "creation_timestamp", true)
        );
        assert_eq!(
            p("last_updated_timestamp DESC"),
            ob(Entity::Attribute, "last_updated_timestamp", false)
        );
        let e = |s: &str| parse_registered_model_order_by(s).unwrap_err().0;
        assert!(e("version_number").contains("Invalid order_by attribute key"));
        assert!(e("tags.x").contains("Invalid order_by entity"));
    }

    // --- model versions ---

    #[test]
    fn model_version_filter() {
        use Comparator::*;
        let p = |s: &str| parse_model_version_filter(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(p("name = 'm'"), vec![c(Entity::Attribute, "name", Eq, s("m"))]);
        assert_eq!(
            p("run_id = 'r'"),
            vec![c(Entity::Attribute, "run_id", Eq, s("r"))]
        );
        assert_eq!(
            p("run_id IN ('a', 'b')"),
            vec![c(Entity::Attribute, "run_id", In, list(&["a", "b"]))]
        );
        assert_eq!(
            p("run_id NOT IN ('a')"),
            vec![c(Entity::Attribute, "run_id", NotIn, list(&["a"]))]
        );
        assert_eq!(
            p("source_path LIKE 's3://%'"),
            vec![c(Entity::Attribute, "source_path", Like, s("s3://%"))]
        );
        assert_eq!(
            p("version_number > 1"),
            vec![c(Entity::Attribute, "version_number", Gt, num(1.0))]
        );
        assert_eq!(p("tags.k = 'v'"), vec![c(Entity::Tag, "k", Eq, s("v"))]);
        assert_eq!(
            p("name = 'm' AND version_number >= 2 AND tags.`stage` ILIKE 'prod'").len(),
            3
        );
        let e = |s: &str| parse_model_version_filter(s).unwrap_err().0;
        assert!(e("version_number = '1'").contains("numeric value"));
        let msg = e("name IN ('a')");
        assert!(
            msg.contains("Invalid comparator 'IN'") && msg.contains("run_id"),
            "{msg}"
        );
        assert!(e("source_path > 1").contains("Invalid comparator '>'"));
        assert!(e("status = 'READY'").contains("Invalid attribute key 'status'"));
    }

    #[test]
    fn model_version_order_by() {
        let p = |s: &str| parse_model_version_order_by(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(p("name"), ob(Entity::Attribute, "name", true));
        assert_eq!(
            p("version_number DESC"),
            ob(Entity::Attribute, "version_number", false)
        );
        assert_eq!(
            p("creation_timestamp"),
            ob(Entity::Attribute, "creation_timestamp", true)
        );
        assert_eq!(
            p("last_updated_timestamp"),
            ob(Entity::Attribute, "last_updated_timestamp", true)
        );
        let e = |s: &str| parse_model_version_order_by(s).unwrap_err().0;
        assert!(e("run_id").contains("Invalid order_by attribute key"));
        assert!(e("timestamp").contains("Invalid order_by attribute key"));
    }

    // --- robustness ---

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }
    }

    fn parse_everything(input: &str) {
        let _ = parse_run_filter(input);
        let _ = parse_run_order_by(input);
        let _ = parse_experiment_filter(input);
        let _ = parse_experiment_order_by(input);
        let _ = parse_registered_model_filter(input);
        let _ = parse_registered_model_order_by(input);
        let _ = parse_model_version_filter(input);
        let _ = parse_model_version_order_by(input);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Lcg(0x5eed);
        for _ in 0..5000 {
            let len = rng.below(40);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            parse_everything(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn random_grammar_soup_never_panics() {
        const PIECES: &[&str] = &[
            "metrics",
            "params",
            "tags",
            "attributes",
            "datasets",
            "run_id",
            "name",
            "created",
            ".",
            " ",
            "`",
            "\"",
            "'",
            "(",
            ")",
            ",",
            "=",
            "!=",
            "<>",
            "<",
            ">=",
            "-",
            "1",
            "2.5",
            "e",
            "AND",
            "OR",
            "NOT",
            "IN",
            "LIKE",
            "ILIKE",
            "ASC",
            "DESC",
            "ü",
            "\u{0}",
            "''",
        ];
        let mut rng = Lcg(42);
        for _ in 0..20000 {
            let n = rng.below(12);
            let input: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            parse_everything(&input);
        }
    }

    #[test]
    fn mutated_valid_filters_never_panic() {
        const SEEDS: &[&str] = &[
            "metrics.rmse < 0.5 AND params.lr = '0.01' AND tags.`a-b` LIKE 'x%'",
            "run_id IN ('a', 'b') and attributes.\"run name\" != \"x\"",
            "datasets.digest NOT IN ('a') AND created >= -1e-3",
            "metrics.`my metric` DESC",
        ];
        let mut rng = Lcg(7);
        for _ in 0..20000 {
            let seed = SEEDS[rng.below(SEEDS.len())];
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..=rng.below(3) {
                let i = rng.below(chars.len() + 1);
                match rng.below(3) {
                    0 if i < chars.len() => {
                        chars.remove(i);
                    }
                    1 => chars.insert(i, char::from(rng.next() as u8 % 128)),
                    _ => chars.truncate(i),
                }
            }
            parse_everything(&chars.into_iter().collect::<String>());
        }
    }
}

#[cfg(test)]
mod proptests {
    //! Properties of the parser on all five endpoints: no input panics, and an error message stays
    //! short whatever the input's length; valid filters and `order_by` entries, generated from each
    //! endpoint's own schema (every entity alias in any case, bare, backticked and double-quoted
    //! keys with doubled quotes inside, every comparator and its spellings, numbers in every notation
    //! the grammar allows, strings with escaped quotes, `IN` lists, AND chains, any whitespace),
    //! parse to exactly the clauses that were generated: the same count, keys and values.

    use std::fmt;

    use proptest::prelude::*;
    use proptest::strategy::{BoxedStrategy, Union};

    use super::*;

    type FilterParser = fn(&str) -> Result<Vec<Clause>, SearchError>;
    type OrderParser = fn(&str) -> Result<OrderBy, SearchError>;

    struct Endpoint {
        name: &'static str,
        schema: &'static Schema,
        filter: FilterParser,
        order_by: OrderParser,
    }

    fn endpoints() -> [Endpoint; 5] {
        [
            Endpoint {
                name: "runs",
                schema: &RUNS,
                filter: parse_run_filter,
                order_by: parse_run_order_by,
            },
            Endpoint {
                name: "experiments",
                schema: &EXPERIMENTS,
                filter: parse_experiment_filter,
                order_by: parse_experiment_order_by,
            },
            Endpoint {
                name: "registered models",
                schema: &REGISTERED_MODELS,
                filter: parse_registered_model_filter,
                order_by: parse_registered_model_order_by,
            },
            Endpoint {
                name: "model versions",
                schema: &MODEL_VERSIONS,
                filter: parse_model_version_filter,
                order_by: parse_model_version_order_by,
            },
            Endpoint {
                name: "logged models",
                schema: &LOGGED_MODELS,
                filter: parse_logged_model_filter,
                order_by: parse_logged_model_order_field,
            },
        ]
    }

    /// Longest error message, in characters, for an input of any length (user input is quoted
    /// through `snippet`).
    const MAX_MESSAGE_CHARS: usize = 600;

    /// Generated text and what it must parse to.
    #[derive(Clone, Debug)]
    struct Gen<T> {
        text: String,
        expected: T,
    }

    // --- lexical pieces ---

    fn ws() -> BoxedStrategy<&'static str> {
        prop::sample::select(vec![" ", "  ", "\t", "\n", "\r\n", "\u{a0}", " \u{3000} "]).boxed()
    }

    fn opt_ws() -> BoxedStrategy<&'static str> {
        prop_oneof![Just(""), ws()].boxed()
    }

    /// `word` with each letter in upper or lower case.
    fn any_case(word: &'static str) -> BoxedStrategy<String> {
        proptest::collection::vec(any::<bool>(), word.chars().count())
            .prop_map(move |upper| {
                word.chars()
                    .zip(upper)
                    .map(|(c, up)| {
                        if up {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect()
            })
            .boxed()
    }

    /// `text` between `q`s, each `q` inside doubled.
    fn quote(text: &str, q: char) -> String {
        let doubled: String = [q, q].iter().collect();
        format!("{q}{}{q}", text.replace(q, &doubled))
    }

    /// One part of a key: bare when it can be, else (or sometimes anyway) backticked or
    /// double-quoted.
    fn key_part(text: String) -> BoxedStrategy<String> {
        let quoted = prop_oneof![Just(quote(&text, '`')), Just(quote(&text, '"'))];
        if !text.is_empty() && text.chars().all(is_word_char) {
            prop_oneof![2 => Just(text), 1 => quoted].boxed()
        } else {
            quoted.boxed()
        }
    }

    /// An entity prefix of `schema` for `entity`, as written.
    fn prefix(schema: &'static Schema, entity: Entity) -> BoxedStrategy<String> {
        let aliases: Vec<&'static str> = schema
            .entities
            .iter()
            .filter(|(_, e)| *e == entity)
            .map(|(alias, _)| *alias)
            .collect();
        prop::sample::select(aliases)
            .prop_flat_map(any_case)
            .prop_flat_map(key_part)
            .boxed()
    }

    /// A metric, param or tag key after its prefix: (as written, as the parser reports it). Either
    /// dotted words (`mlflow.user`, each part bare or quoted) or any text in one quoted part.
    fn free_key() -> BoxedStrategy<(String, String)> {
        let dotted = proptest::collection::vec("[a-zA-Z0-9_é]{1,8}", 1..4).prop_flat_map(|words| {
            let name = words.join(".");
            let parts: Vec<BoxedStrategy<String>> = words.into_iter().map(key_part).collect();
            parts.prop_map(move |parts| (parts.join("."), name.clone()))
        });
        let quoted = prop_oneof![any::<String>(), "[a-z`\". ]{1,10}"]
            .prop_filter("a quoted key is not empty", |name| !name.is_empty())
            .prop_flat_map(|name| {
                prop_oneof![Just(quote(&name, '`')), Just(quote(&name, '"'))]
                    .prop_map(move |text| (text, name.clone()))
            });
        prop_oneof![dotted, quoted].boxed()
    }

    /// A finite number in one of the notations of the grammar, and its value.
    fn number() -> BoxedStrategy<(String, f64)> {
        let value = prop_oneof![
            any::<f64>().prop_filter("finite", |x| x.is_finite()),
            (-1_000_000i32..1_000_000).prop_map(f64::from),
            (-1000i32..1000, -30i32..30).prop_map(|(m, e)| f64::from(m) * 10f64.powi(e)),
        ];
        (value, 0usize..7)
            .prop_map(|(x, style)| {
                let plain = format!("{x}");
                let text = match style {
                    0 => plain,
                    1 => format!("{x:e}"),
                    2 => format!("{x:E}"),
                    // An explicit `+` on a non-negative exponent.
                    3 => {
                        let e = format!("{x:e}");
                        if e.contains("e-") { e } else { e.replace('e', "e+") }
                    }
                    // No digit before the point: `.5`, `-.5`.
                    4 => plain
                        .strip_prefix("0.")
                        .map(|rest| format!(".{rest}"))
                        .or_else(|| plain.strip_prefix("-0.").map(|rest| format!("-.{rest}")))
                        .unwrap_or(plain),
                    // No digit after the point: `5.`.
                    5 if !plain.contains('.') => format!("{plain}."),
                    // No digit after the point, then an exponent: `5.e3`.
                    6 => {
                        let e = format!("{x:e}");
                        match e.split_once('e') {
                            Some((mantissa, exp)) if !mantissa.contains('.') => format!("{mantissa}.e{exp}"),
                            _ => e,
                        }
                    }
                    _ => plain,
                };
                (text, x)
            })
            .boxed()
    }

    /// A quoted string value (single or double quotes) and its text.
    fn string_value() -> BoxedStrategy<(String, String)> {
        (
            prop_oneof![any::<String>(), "[a-z'\" %_\\\\]{0,10}"],
            any::<bool>(),
        )
            .prop_map(|(s, single)| (quote(&s, if single { '\'' } else { '"' }), s))
            .boxed()
    }

    fn list_value() -> BoxedStrategy<(String, Vec<String>)> {
        proptest::collection::vec((opt_ws(), string_value(), opt_ws()), 1..5)
            .prop_map(|items| {
                let text: Vec<String> = items.iter().map(|(a, (t, _), b)| format!("{a}{t}{b}")).collect();
                let values = items.into_iter().map(|(_, (_, s), _)| s).collect();
                (format!("({})", text.join(",")), values)
            })
            .boxed()
    }

    /// Every spelling of `cmp`; whether it is a word (and needs whitespace around it).
    fn comparator_text(cmp: Comparator) -> (BoxedStrategy<String>, bool) {
        let just = |s: &'static str| Just(s.to_owned()).boxed();
        let words = |w: Vec<BoxedStrategy<String>>| {
            w.prop_flat_map(|parts| {
                let n = parts.len();
                (Just(parts), proptest::collection::vec(ws(), n.saturating_sub(1)))
            })
            .prop_map(|(parts, gaps)| {
                let mut out = String::new();
                for (i, part) in parts.iter().enumerate() {
                    if let Some(gap) = i.checked_sub(1).and_then(|g| gaps.get(g)) {
                        out.push_str(gap);
                    }
                    out.push_str(part);
                }
                out
            })
            .boxed()
        };
        match cmp {
            Comparator::Eq => (just("="), false),
            Comparator::Ne => (prop_oneof![just("!="), just("<>")].boxed(), false),
            Comparator::Gt => (just(">"), false),
            Comparator::Ge => (just(">="), false),
            Comparator::Lt => (just("<"), false),
            Comparator::Le => (just("<="), false),
            Comparator::Like => (any_case("like"), true),
            Comparator::ILike => (any_case("ilike"), true),
            Comparator::In => (any_case("in"), true),
            Comparator::NotIn => (words(vec![any_case("not"), any_case("in")]), true),
            Comparator::IsNull => (words(vec![any_case("is"), any_case("null")]), true),
            Comparator::IsNotNull => (
                words(vec![any_case("is"), any_case("not"), any_case("null")]),
                true,
            ),
        }
    }

    // --- clauses ---

    /// `key_text <cmp> value` for a key of `kind`, with a comparator that kind allows.
    fn clause(key_text: String, entity: Entity, key: String, kind: KeyKind) -> BoxedStrategy<Gen<Clause>> {
        let comparators = match kind {
            KeyKind::Num => NUMERIC_CMPS,
            KeyKind::Str => STRING_CMPS,
            KeyKind::StrOrList => STRING_LIST_CMPS,
        };
        prop::sample::select(comparators)
            .prop_flat_map(move |comparator| {
                let value: BoxedStrategy<(String, Value)> = match (kind, comparator) {
                    (KeyKind::Num, _) => number().prop_map(|(t, x)| (t, Value::Number(x))).boxed(),
                    (_, Comparator::In | Comparator::NotIn) => {
                        list_value().prop_map(|(t, l)| (t, Value::List(l))).boxed()
                    }
                    _ => string_value().prop_map(|(t, s)| (t, Value::String(s))).boxed(),
                };
                assemble(key_text.clone(), entity, key.clone(), comparator, Some(value))
            })
            .boxed()
    }

    fn assemble(
        key_text: String,
        entity: Entity,
        key: String,
        comparator: Comparator,
        value: Option<BoxedStrategy<(String, Value)>>,
    ) -> BoxedStrategy<Gen<Clause>> {
        let (cmp_text, is_word) = comparator_text(comparator);
        let gap = move || if is_word { ws() } else { opt_ws() };
        let value = value.unwrap_or_else(|| Just((String::new(), Value::List(Vec::new()))).boxed());
        (cmp_text, gap(), gap(), value)
            .prop_map(move |(cmp_text, before, after, (value_text, value))| {
                let after = if value_text.is_empty() { "" } else { after };
                Gen {
                    text: format!("{key_text}{before}{cmp_text}{after}{value_text}"),
                    expected: Clause {
                        entity,
                        key: key.clone(),
                        comparator,
                        value,
                    },
                }
            })
            .boxed()
    }

    /// `<prefix>.<free key>` clauses of a metric, param or tag.
    fn keyed_clause(schema: &'static Schema, entity: Entity, kind: KeyKind) -> BoxedStrategy<Gen<Clause>> {
        (prefix(schema, entity), free_key())
            .prop_flat_map(move |(prefix, (text, key))| clause(format!("{prefix}.{text}"), entity, key, kind))
            .boxed()
    }

    fn tag_null_test(schema: &'static Schema) -> BoxedStrategy<Gen<Clause>> {
        (
            prefix(schema, Entity::Tag),
            free_key(),
            prop_oneof![Just(Comparator::IsNull), Just(Comparator::IsNotNull)],
        )
            .prop_flat_map(|(prefix, (text, key), comparator)| {
                assemble(format!("{prefix}.{text}"), Entity::Tag, key, comparator, None)
            })
            .boxed()
    }

    /// A name as written (aliases in any case) and its canonical name and kind.
    fn named<T: Copy + fmt::Debug + 'static>(
        names: Vec<(&'static str, T)>,
        aliases: &'static [(&'static str, &'static str)],
    ) -> BoxedStrategy<(String, &'static str, T)> {
        let mut choices: Vec<BoxedStrategy<(String, &'static str, T)>> = names
            .iter()
            .map(|&(name, kind)| Just((name.to_owned(), name, kind)).boxed())
            .collect();
        for &(alias, target) in aliases {
            if let Some(&(canon, kind)) = names.iter().find(|(n, _)| *n == target) {
                choices.push(any_case(alias).prop_map(move |a| (a, canon, kind)).boxed());
            }
        }
        Union::new(choices).boxed()
    }

    /// An attribute, with or without one of the attribute prefixes.
    fn attribute_key<T: Copy + fmt::Debug + 'static>(
        schema: &'static Schema,
        names: Vec<(&'static str, T)>,
        aliases: &'static [(&'static str, &'static str)],
    ) -> BoxedStrategy<(String, &'static str, T)> {
        (
            named(names, aliases),
            prop::option::of(prefix(schema, Entity::Attribute)),
        )
            .prop_flat_map(|((written, canon, kind), prefix)| {
                key_part(written).prop_map(move |part| {
                    let text = match &prefix {
                        Some(prefix) => format!("{prefix}.{part}"),
                        None => part,
                    };
                    (text, canon, kind)
                })
            })
            .boxed()
    }

    fn filter_clause(schema: &'static Schema) -> BoxedStrategy<Gen<Clause>> {
        let has = |entity: Entity| schema.entities.iter().any(|(_, e)| *e == entity);
        let mut kinds = Vec::new();
        if has(Entity::Metric) {
            kinds.push(keyed_clause(schema, Entity::Metric, KeyKind::Num));
        }
        if has(Entity::Param) {
            kinds.push(keyed_clause(schema, Entity::Param, KeyKind::Str));
        }
        kinds.push(keyed_clause(schema, Entity::Tag, KeyKind::Str));
        if schema.tag_null_tests {
            kinds.push(tag_null_test(schema));
        }
        kinds.push(
            attribute_key(schema, schema.filter_attrs.to_vec(), schema.filter_aliases)
                .prop_flat_map(|(text, canon, kind)| clause(text, Entity::Attribute, canon.to_owned(), kind))
                .boxed(),
        );
        if has(Entity::Dataset) {
            kinds.push(
                (
                    prefix(schema, Entity::Dataset),
                    prop::sample::select(DATASET_KEYS),
                )
                    .prop_flat_map(|(prefix, (name, kind))| {
                        key_part(name.to_owned()).prop_flat_map(move |part| {
                            clause(format!("{prefix}.{part}"), Entity::Dataset, name.to_owned(), kind)
                        })
                    })
                    .boxed(),
            );
        }
        Union::new(kinds).boxed()
    }

    /// One to five clauses joined by AND (any case, any whitespace), with whitespace around.
    fn filter(schema: &'static Schema) -> BoxedStrategy<Gen<Vec<Clause>>> {
        (
            proptest::collection::vec((filter_clause(schema), ws(), any_case("and"), ws()), 1..6),
            opt_ws(),
            opt_ws(),
        )
            .prop_map(|(clauses, lead, trail)| {
                let mut text = lead.to_owned();
                let mut expected = Vec::new();
                for (i, (clause, before, and, after)) in clauses.into_iter().enumerate() {
                    if i > 0 {
                        text.push_str(&format!("{before}{and}{after}"));
                    }
                    text.push_str(&clause.text);
                    expected.push(clause.expected);
                }
                text.push_str(trail);
                Gen { text, expected }
            })
            .boxed()
    }

    fn order_by(schema: &'static Schema) -> BoxedStrategy<Gen<OrderBy>> {
        let mut keys: Vec<BoxedStrategy<(String, Entity, String)>> = Vec::new();
        for &entity in schema.order_entities {
            if entity == Entity::Attribute {
                let names = schema.order_attrs.iter().map(|n| (*n, ())).collect();
                keys.push(
                    attribute_key(schema, names, schema.order_aliases)
                        .prop_map(|(text, canon, ())| (text, Entity::Attribute, canon.to_owned()))
                        .boxed(),
                );
            } else {
                keys.push(
                    (prefix(schema, entity), free_key())
                        .prop_map(move |(prefix, (text, key))| (format!("{prefix}.{text}"), entity, key))
                        .boxed(),
                );
            }
        }
        let direction = prop_oneof![
            Just((String::new(), true)),
            (ws(), any_case("asc")).prop_map(|(w, d)| (format!("{w}{d}"), true)),
            (ws(), any_case("desc")).prop_map(|(w, d)| (format!("{w}{d}"), false)),
        ];
        (Union::new(keys), direction, opt_ws(), opt_ws())
            .prop_map(|((key_text, entity, key), (dir, ascending), lead, trail)| Gen {
                text: format!("{lead}{key_text}{dir}{trail}"),
                expected: OrderBy {
                    entity,
                    key,
                    ascending,
                },
            })
            .boxed()
    }

    /// Text made of the grammar's tokens, so that deep parser states are reached often.
    fn soup() -> BoxedStrategy<String> {
        let token = prop_oneof![
            prop::sample::select(vec![
                "metrics",
                "params",
                "tags",
                "attributes",
                "datasets",
                "dataset",
                "run",
                "attr",
                "run_id",
                "name",
                "model_id",
                "created",
                "creation_time",
                ".",
                " ",
                "\t",
                "`",
                "\"",
                "'",
                "''",
                "(",
                ")",
                ",",
                "=",
                "==",
                "!=",
                "<>",
                "<",
                ">",
                "<=",
                ">=",
                "!",
                "-",
                "+",
                "e",
                "E",
                "1",
                "2.5",
                ".5",
                "5.",
                "1e999",
                "AND",
                "and",
                "OR",
                "NOT",
                "IN",
                "IS",
                "NULL",
                "LIKE",
                "ILIKE",
                "ASC",
                "DESC",
                "ü",
                "日本",
                "\u{0}",
                "\u{a0}",
            ])
            .prop_map(str::to_owned),
            "[a-z0-9_]{1,70}",
            ".{0,3}",
        ];
        proptest::collection::vec(token, 0..30)
            .prop_map(|t| t.concat())
            .boxed()
    }

    fn check_never_panics(text: &str) -> Result<(), TestCaseError> {
        for endpoint in endpoints() {
            let errors = [(endpoint.filter)(text).err(), (endpoint.order_by)(text).err()];
            for err in errors.into_iter().flatten() {
                let chars = err.0.chars().count();
                prop_assert!(chars > 0, "{}: empty message", endpoint.name);
                prop_assert!(
                    chars <= MAX_MESSAGE_CHARS,
                    "{}: {chars}-character message for a {}-character input: {}",
                    endpoint.name,
                    text.chars().count(),
                    err.0
                );
            }
        }
        Ok(())
    }

    fn endpoint_and<T: fmt::Debug + Clone + 'static>(
        generate: fn(&'static Schema) -> BoxedStrategy<Gen<T>>,
    ) -> BoxedStrategy<(usize, Gen<T>)> {
        (0..endpoints().len())
            .prop_flat_map(move |i| generate(endpoints()[i].schema).prop_map(move |g| (i, g)))
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_text_gives_ok_or_a_short_error(text in any::<String>()) {
            check_never_panics(&text)?;
        }

        #[test]
        fn grammar_soup_gives_ok_or_a_short_error(text in soup()) {
            check_never_panics(&text)?;
        }

        #[test]
        fn long_words_give_short_errors(
            word in "[a-z]{100,400}",
            shape in prop::sample::select(vec!["{w}", "metrics.{w} {w}", "{w}.x = 1", "tags.x = {w}",
                "run_id IN ({w})", "attributes.{w} = 'a'", "metrics.a < 1{w}", "`{w}", "{w} DESC {w}"]),
        ) {
            check_never_panics(&shape.replace("{w}", &word))?;
        }

        #[test]
        fn valid_filters_parse_to_the_generated_clauses((i, generated) in endpoint_and(filter)) {
            let endpoint = &endpoints()[i];
            let parsed = (endpoint.filter)(&generated.text);
            prop_assert_eq!(
                parsed.as_ref(),
                Ok(&generated.expected),
                "{} filter {:?}",
                endpoint.name,
                generated.text
            );
        }

        #[test]
        fn filters_joined_by_and_parse_to_the_concatenation(
            (i, first) in endpoint_and(filter),
            second_seed in any::<u64>(),
        ) {
            // A second filter for the same endpoint from a derived runner, then both joined.
            let endpoint = &endpoints()[i];
            let mut runner = proptest::test_runner::TestRunner::new_with_rng(
                ProptestConfig::default(),
                proptest::test_runner::TestRng::from_seed(
                    proptest::test_runner::RngAlgorithm::ChaCha,
                    &[second_seed.to_le_bytes(), second_seed.to_be_bytes(), [7; 8], [9; 8]].concat(),
                ),
            );
            let second = filter(endpoint.schema).new_tree(&mut runner).map_err(TestCaseError::fail)?.current();
            let joined = format!("{} AND {}", first.text, second.text);
            let mut expected = first.expected.clone();
            expected.extend(second.expected.iter().cloned());
            prop_assert_eq!((endpoint.filter)(&joined), Ok(expected), "{} filter {:?}", endpoint.name, joined);
        }

        #[test]
        fn valid_order_by_entries_parse_to_the_generated_key((i, generated) in endpoint_and(order_by)) {
            let endpoint = &endpoints()[i];
            let parsed = (endpoint.order_by)(&generated.text);
            prop_assert_eq!(
                parsed.as_ref(),
                Ok(&generated.expected),
                "{} order_by {:?}",
                endpoint.name,
                generated.text
            );
        }
    }
}
