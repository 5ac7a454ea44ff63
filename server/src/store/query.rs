//! A small SQL text + argument buffer. User input only ever travels as bound arguments, never
//! spliced into the text. The text is kept twice, with PostgreSQL's numbered `$N` placeholders and
//! with SQLite's plain `?`: SQLite resolves every numbered or named parameter through a linear list
//! when binding, so a multi-row INSERT with `$N` placeholders costs O(n²) in its arguments, while
//! plain `?` binds in O(n). Arguments are bound strictly in order, so both texts agree.
//!
//! MySQL gets a third text: `?` placeholders, the reserved word `key` quoted where it names a
//! column, and its own upsert clauses (`on_conflict_*`: `INSERT IGNORE`, `ON DUPLICATE KEY UPDATE`)
//! in place of `ON CONFLICT` (docs/architecture.md, "Storage").

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments};

use super::sql::Engine;

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    I64(i64),
    F64(f64),
    Str(String),
    OptI64(Option<i64>),
    OptF64(Option<f64>),
    OptStr(Option<String>),
}

#[derive(Debug, Default)]
pub struct Sql {
    /// The text with `$N` placeholders (PostgreSQL).
    pub text: String,
    /// The same text with `?` placeholders (SQLite).
    positional: String,
    /// The MySQL text: `?` placeholders, `key` quoted, MySQL's upserts.
    mysql: String,
    pub args: Vec<Arg>,
}

/// `text` with every bare `key` identifier outside string literals written `"key"` (MySQL reserves
/// the word; sessions run with ANSI_QUOTES, see `crate::db`).
pub fn quote_reserved(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("key") {
        return std::borrow::Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let mut in_literal = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' {
            in_literal = !in_literal;
        } else if !in_literal && text[i..].starts_with("key") {
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'"' || c == b'`';
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + 3).copied();
            if !before.is_some_and(word) && !after.is_some_and(word) {
                out.push_str("\"key\"");
                i += 3;
                continue;
            }
        }
        // Multi-byte characters are copied whole: only ASCII bytes are ever compared above.
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    std::borrow::Cow::Owned(out)
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            positional: text.to_owned(),
            mysql: quote_reserved(text).into_owned(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self.positional.push_str(text);
        self.mysql.push_str(&quote_reserved(text));
        self
    }

    /// Append `portable` on SQLite and PostgreSQL, `mysql` on MySQL.
    pub fn push_dialect(&mut self, portable: &str, mysql: &str) -> &mut Self {
        self.text.push_str(portable);
        self.positional.push_str(portable);
        self.mysql.push_str(&quote_reserved(mysql));
        self
    }

    /// Put `text` in front of the statement (e.g. `EXPLAIN `).
    pub fn prepend(&mut self, text: &str) -> &mut Self {
        self.text.insert_str(0, text);
        self.positional.insert_str(0, text);
        self.mysql.insert_str(0, text);
        self
    }

    /// End an INSERT so that rows whose key exists are skipped: `ON CONFLICT [(target)] DO
    /// NOTHING`, or on MySQL `INSERT IGNORE` (which reports skipped rows as not affected, as the
    /// others do). `target` may be empty (any unique key).
    pub fn on_conflict_do_nothing(&mut self, target: &str) -> &mut Self {
        let clause = if target.is_empty() {
            " ON CONFLICT DO NOTHING".to_owned()
        } else {
            format!(" ON CONFLICT ({target}) DO NOTHING")
        };
        self.text.push_str(&clause);
        self.positional.push_str(&clause);
        if let Some(at) = self.mysql.find("INSERT INTO") {
            self.mysql
                .replace_range(at..at + "INSERT INTO".len(), "INSERT IGNORE INTO");
        }
        self
    }

    /// End an INSERT so that a row whose key (`target`, the primary key or a unique constraint)
    /// exists gets `columns` from the new row: `ON CONFLICT (target) DO UPDATE SET c =
    /// excluded.c, …`, or on MySQL `ON DUPLICATE KEY UPDATE c = VALUES(c), …`.
    pub fn on_conflict_update(&mut self, target: &str, columns: &[&str]) -> &mut Self {
        let mut portable = format!(" ON CONFLICT ({target}) DO UPDATE SET ");
        let mut mysql = " ON DUPLICATE KEY UPDATE ".to_owned();
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                portable.push_str(", ");
                mysql.push_str(", ");
            }
            portable.push_str(&format!("{c} = excluded.{c}"));
            mysql.push_str(&format!("{c} = VALUES({c})"));
        }
        self.push_dialect(&portable, &mysql)
    }

    /// Append a placeholder bound to `arg`.
    pub fn bind(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self.positional.push('?');
        self.mysql.push('?');
        self
    }

    pub fn bind_str(&mut self, s: &str) -> &mut Self {
        self.bind(Arg::Str(s.to_owned()))
    }

    pub fn bind_i64(&mut self, v: i64) -> &mut Self {
        self.bind(Arg::I64(v))
    }

    /// `(p1, p2, …)` for a non-empty list of strings.
    pub fn bind_list<'a>(&mut self, items: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind_str(item);
        }
        self.push(")");
        self
    }

    /// The query for `engine`, with its arguments bound.
    pub fn query(&self, engine: Engine) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        let mut args = AnyArguments::default();
        for arg in &self.args {
            // Adding a value to AnyArguments cannot fail for these types; ignore the Result.
            let _ = match arg {
                Arg::I64(v) => args.add(*v),
                Arg::F64(v) => args.add(*v),
                Arg::Str(v) => args.add(v.clone()),
                Arg::OptI64(v) => args.add(*v),
                Arg::OptF64(v) => args.add(*v),
                Arg::OptStr(v) => args.add(v.clone()),
            };
        }
        match engine {
            Engine::Postgres => sqlx::query_with(&self.text, args),
            Engine::Sqlite => sqlx::query_with(&self.positional, args),
            Engine::MySql => sqlx::query_with(&self.mysql, args),
        }
    }

    /// The statement's text for `engine`, as sent.
    pub fn text_for(&self, engine: Engine) -> &str {
        match engine {
            Engine::Postgres => &self.text,
            Engine::Sqlite => &self.positional,
            Engine::MySql => &self.mysql,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_in_order() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.bind_str("x").push(" AND b IN ").bind_list(["p", "q"]);
        assert_eq!(sql.text, "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(sql.positional, "SELECT 1 WHERE a = ? AND b IN (?, ?)");
        assert_eq!(sql.args.len(), 3);
        assert_eq!(sql.mysql, sql.positional);
    }

    #[test]
    fn mysql_quotes_key_and_writes_its_own_upserts() {
        let mut sql = Sql::new("INSERT INTO params (run_uuid, key, value) VALUES (");
        sql.bind_str("r")
            .push(", ")
            .bind_str("k")
            .push(", ")
            .bind_str("v")
            .push(")");
        sql.on_conflict_update("run_uuid, key", &["value"]);
        assert_eq!(
            sql.text,
            "INSERT INTO params (run_uuid, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value"
        );
        assert_eq!(
            sql.text_for(Engine::MySql),
            "INSERT INTO params (run_uuid, \"key\", value) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE value = VALUES(value)"
        );
        let mut sql = Sql::new("INSERT INTO t (key) VALUES ('key')");
        sql.on_conflict_do_nothing("");
        assert_eq!(
            sql.text_for(Engine::Sqlite),
            "INSERT INTO t (key) VALUES ('key') ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            sql.text_for(Engine::MySql),
            "INSERT IGNORE INTO t (\"key\") VALUES ('key')"
        );
        // Only the bare word: columns that merely contain it, qualified names and literals stay.
        assert_eq!(
            quote_reserved("SELECT f.key, monkey, key_id, 'a key' FROM t WHERE key = 1"),
            "SELECT f.\"key\", monkey, key_id, 'a key' FROM t WHERE \"key\" = 1"
        );
    }
}
