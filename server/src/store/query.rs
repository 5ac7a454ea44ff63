//! A small SQL text + argument buffer. User input only ever travels as bound arguments, never
//! spliced into the text. The text is kept twice, with PostgreSQL's numbered `$N` placeholders and
//! with SQLite's plain `?`: SQLite resolves every numbered or named parameter through a linear list
//! when binding, so a multi-row INSERT with `$N` placeholders costs O(n²) in its arguments, while
//! plain `?` binds in O(n). Arguments are bound strictly in order, so both texts agree.

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
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            positional: text.to_owned(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self.positional.push_str(text);
        self
    }

    /// Put `text` in front of the statement (e.g. `EXPLAIN `).
    pub fn prepend(&mut self, text: &str) -> &mut Self {
        self.text.insert_str(0, text);
        self.positional.insert_str(0, text);
        self
    }

    /// Append a placeholder bound to `arg`.
    pub fn bind(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self.positional.push('?');
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
        let text = match engine {
            Engine::Postgres => &self.text,
            Engine::Sqlite => &self.positional,
        };
        sqlx::query_with(text, args)
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
    }
}
