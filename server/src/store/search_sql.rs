//! Compiles parsed search filters and order-by clauses (from `crate::search`) into parameterised
//! SQL fragments over the tracking schema. Keys and values are always bound, never spliced.

use crate::search::{Clause, Comparator, Entity, OrderBy, Value};
use crate::store::{DatasetRef, LoggedModelOrder};

use super::query::{Arg, Sql};

fn comparator_sql(c: Comparator) -> &'static str {
    match c {
        Comparator::Eq => "=",
        Comparator::Ne => "<>",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Like => "LIKE",
        Comparator::ILike => "LIKE",
        Comparator::In => "IN",
        Comparator::NotIn => "NOT IN",
        // Tag presence tests are EXISTS / NOT EXISTS around the key match (see `push_tag`).
        Comparator::IsNull | Comparator::IsNotNull => "",
    }
}

/// `[NOT] EXISTS (SELECT 1 FROM <table> f WHERE <owner> AND f.key = ? AND <value test>)`: a key's
/// row in a key/value table, compared, or (IS NULL / IS NOT NULL) merely absent or present.
fn push_key_value(sql: &mut Sql, table: &str, owner: &str, clause: &Clause) {
    if clause.comparator == Comparator::IsNull {
        sql.push("NOT ");
    }
    sql.push("EXISTS (SELECT 1 FROM ")
        .push(table)
        .push(" f WHERE ")
        .push(owner)
        .push(" AND f.key = ")
        .bind_str(&clause.key);
    if !matches!(clause.comparator, Comparator::IsNull | Comparator::IsNotNull) {
        sql.push(" AND ");
        push_comparison(sql, "f.value", clause.comparator, &clause.value);
    }
    sql.push(")");
}

fn number_arg(n: f64) -> Arg {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Arg::I64(n as i64)
    } else {
        Arg::F64(n)
    }
}

/// `column <op> value`, with ILIKE as LOWER() on both sides (portable across engines).
fn push_comparison(sql: &mut Sql, column: &str, comparator: Comparator, value: &Value) {
    push_comparison_of(
        sql,
        &|sql: &mut Sql| {
            sql.push(column);
        },
        comparator,
        value,
    );
}

/// `<operand> <op> value`, where `operand` writes the left-hand side (a column, or a scalar
/// subquery with its own bound arguments: it is written where it stands, so arguments stay in
/// order).
fn push_comparison_of(sql: &mut Sql, operand: &dyn Fn(&mut Sql), comparator: Comparator, value: &Value) {
    match (comparator, value) {
        (Comparator::In | Comparator::NotIn, Value::List(items)) => {
            if items.is_empty() {
                // `x IN ()` is invalid SQL; an empty IN matches nothing, an empty NOT IN everything.
                sql.push(if comparator == Comparator::In {
                    "1 = 0"
                } else {
                    "1 = 1"
                });
                return;
            }
            operand(sql);
            sql.push(" ").push(comparator_sql(comparator)).push(" ");
            sql.bind_list(items.iter().map(String::as_str));
        }
        (Comparator::ILike, Value::String(s)) => {
            sql.push("LOWER(");
            operand(sql);
            sql.push(") LIKE LOWER(").bind_str(s).push(")");
        }
        (_, Value::String(s)) => {
            operand(sql);
            sql.push(" ")
                .push(comparator_sql(comparator))
                .push(" ")
                .bind_str(s);
        }
        (_, Value::Number(n)) => {
            operand(sql);
            sql.push(" ")
                .push(comparator_sql(comparator))
                .push(" ")
                .bind(number_arg(*n));
        }
        (_, Value::List(_)) => {
            // The parser only produces lists for IN / NOT IN.
            sql.push("1 = 0");
        }
    }
}

/// A run's value of one metric (its latest, NaN excluded), param or tag compared:
/// `(SELECT f.value FROM <table> f WHERE f.run_uuid = r.run_uuid AND f.key = ?) <op> value`.
/// `(run_uuid, key)` is each table's primary key, so the subquery is one primary-key probe per
/// candidate run on every engine, and a run without the key compares as NULL (no match, as MLflow
/// has it). Written as EXISTS instead, PostgreSQL turns the test into a semi-join and, while the
/// planner's statistics lag a table that just grew, joins it through the `(key, value)` index
/// with a filter: quadratic in the runs (docs/architecture.md, "Performance").
fn push_run_value_test(sql: &mut Sql, table: &str, clause: &Clause) {
    let nan = if table == "latest_metrics" {
        " AND f.is_nan <> 1"
    } else {
        ""
    };
    let key = clause.key.as_str();
    push_comparison_of(
        sql,
        &|sql: &mut Sql| {
            sql.push("(SELECT f.value FROM ")
                .push(table)
                .push(" f WHERE f.run_uuid = r.run_uuid AND f.key = ")
                .bind_str(key)
                .push(nan)
                .push(")");
        },
        clause.comparator,
        &clause.value,
    );
}

fn run_attribute_column(key: &str) -> &'static str {
    match key {
        "run_id" | "run_uuid" => "r.run_uuid",
        "run_name" => "r.name",
        "status" => "r.status",
        "user_id" => "r.user_id",
        "artifact_uri" => "r.artifact_uri",
        "start_time" | "created" => "r.start_time",
        "end_time" => "r.end_time",
        "experiment_id" => "r.experiment_id",
        _ => "r.run_uuid",
    }
}

/// Append ` AND (…)` for each run filter clause.
pub fn push_run_filter<'a>(sql: &mut Sql, clauses: impl IntoIterator<Item = &'a Clause>) {
    for clause in clauses {
        sql.push(" AND ");
        match clause.entity {
            Entity::Metric => {
                sql.push("(");
                push_run_value_test(sql, "latest_metrics", clause);
                sql.push(")");
            }
            Entity::Param | Entity::Tag => {
                let table = if clause.entity == Entity::Param {
                    "params"
                } else {
                    "run_tags"
                };
                if matches!(clause.comparator, Comparator::IsNull | Comparator::IsNotNull) {
                    push_key_value(sql, table, "f.run_uuid = r.run_uuid", clause);
                } else {
                    sql.push("(");
                    push_run_value_test(sql, table, clause);
                    sql.push(")");
                }
            }
            Entity::Attribute => {
                sql.push("(");
                push_comparison(
                    sql,
                    run_attribute_column(&clause.key),
                    clause.comparator,
                    &clause.value,
                );
                sql.push(")");
            }
            Entity::Dataset => {
                let column = match clause.key.as_str() {
                    "digest" => "f.digest",
                    "context" => "f.context",
                    _ => "f.name",
                };
                sql.push("EXISTS (SELECT 1 FROM run_dataset_inputs f WHERE f.run_uuid = r.run_uuid AND ");
                push_comparison(sql, column, clause.comparator, &clause.value);
                sql.push(")");
            }
        }
    }
}

/// How a run search treats the first order-by key when it is a metric, param or tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadingKey {
    /// LEFT JOIN it like every other key (runs without it sort last).
    Joined,
    /// The statement is driven from that key's table, already in the FROM clause as `o0`: only
    /// runs that have the key, in the order of its `(key, value)` index.
    Driving,
    /// The statement selects the runs without the key: no join and no order term for it.
    Absent,
}

/// The table holding a keyed entity's values, if the entity is keyed.
pub fn keyed_table(entity: Entity) -> Option<&'static str> {
    match entity {
        Entity::Metric => Some("latest_metrics"),
        Entity::Param => Some("params"),
        Entity::Tag => Some("run_tags"),
        Entity::Attribute | Entity::Dataset => None,
    }
}

/// Joins needed by run order-by clauses, and the ORDER BY list (missing values sort last, then the
/// MLflow tie-break `start_time DESC, run_id ASC`). `leading` says how the first key is handled
/// when it is a metric, param or tag (the key aliases stay `o{i}` by position either way).
pub fn push_run_order(joins: &mut Sql, order_by: &[OrderBy], leading: LeadingKey) -> String {
    let mut terms = Vec::new();
    for (i, ob) in order_by.iter().enumerate() {
        let dir = if ob.ascending { "ASC" } else { "DESC" };
        let expr = match keyed_table(ob.entity) {
            Some(table) => {
                let alias = format!("o{i}");
                match (i, leading) {
                    (0, LeadingKey::Driving) => {
                        terms.push(format!("{alias}.value {dir}"));
                        continue;
                    }
                    (0, LeadingKey::Absent) => continue,
                    _ => {}
                }
                joins
                    .push(" LEFT JOIN ")
                    .push(table)
                    .push(" ")
                    .push(&alias)
                    .push(" ON ")
                    .push(&alias)
                    .push(".run_uuid = r.run_uuid AND ")
                    .push(&alias)
                    .push(".key = ")
                    .bind_str(&ob.key);
                format!("{alias}.value")
            }
            None => run_attribute_column(&ob.key).to_owned(),
        };
        terms.push(format!("({expr} IS NULL) ASC, {expr} {dir}"));
    }
    terms.push("r.start_time DESC, r.run_uuid ASC".to_owned());
    terms.join(", ")
}

/// ` AND o0.… ` conditions for the filter's numeric tests on the metric that drives a search
/// (`LeadingKey::Driving`): they hold for `o0` exactly when the filter's own test would (the same
/// `(run_uuid, key)` row), let the `(key, value)` index start at the range's edge, and take that
/// test's place in the filter (`in_driving_range`).
pub fn push_driving_metric_range(sql: &mut Sql, clauses: &[Clause], key: &str) {
    for clause in clauses.iter().filter(|c| in_driving_range(c, key)) {
        sql.push(" AND o0.is_nan <> 1 AND ");
        push_comparison(sql, "o0.value", clause.comparator, &clause.value);
    }
}

/// Whether [`push_driving_metric_range`] tests `clause` on the driving row of metric `key`: then
/// the same test in the filter would probe `latest_metrics` again for the row already in hand.
pub fn in_driving_range(clause: &Clause, key: &str) -> bool {
    let numeric = matches!(clause.value, Value::Number(_));
    let ranged = matches!(
        clause.comparator,
        Comparator::Eq | Comparator::Gt | Comparator::Ge | Comparator::Lt | Comparator::Le
    );
    clause.entity == Entity::Metric && clause.key == key && numeric && ranged
}

fn experiment_attribute_column(key: &str) -> &'static str {
    match key {
        "name" => "e.name",
        "creation_time" => "e.creation_time",
        "last_update_time" => "e.last_update_time",
        _ => "e.experiment_id",
    }
}

fn logged_model_column(key: &str) -> &'static str {
    match key {
        "name" => "m.name",
        "source_run_id" => "m.source_run_id",
        "status" => "m.status",
        "model_type" => "m.model_type",
        "creation_timestamp" => "m.creation_timestamp",
        "last_updated_timestamp" => "m.last_updated_timestamp",
        "experiment_id" => "m.experiment_id",
        _ => "m.model_id",
    }
}

/// ` AND (<dataset is one of these>)` on `logged_model_metrics f`; nothing when `datasets` is empty.
fn push_dataset_restriction(sql: &mut Sql, datasets: &[DatasetRef]) {
    if datasets.is_empty() {
        return;
    }
    sql.push(" AND (");
    for (i, d) in datasets.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(f.dataset_name = ").bind_str(&d.name);
        if let Some(digest) = &d.digest {
            sql.push(" AND f.dataset_digest = ").bind_str(digest);
        }
        sql.push(")");
    }
    sql.push(")");
}

/// Append ` AND (…)` for each logged-model filter clause over `logged_models m`: attributes, and
/// metrics (any logged value, on `datasets` when given), params and tags of the model.
pub fn push_logged_model_filter(sql: &mut Sql, clauses: &[Clause], datasets: &[DatasetRef]) {
    for clause in clauses {
        sql.push(" AND ");
        match clause.entity {
            Entity::Metric => {
                sql.push(
                    "EXISTS (SELECT 1 FROM logged_model_metrics f WHERE f.model_id = m.model_id AND f.key = ",
                )
                .bind_str(&clause.key)
                .push(" AND f.is_nan <> 1");
                push_dataset_restriction(sql, datasets);
                sql.push(" AND ");
                push_comparison(sql, "f.value", clause.comparator, &clause.value);
                sql.push(")");
            }
            Entity::Param => push_key_value(sql, "logged_model_params", "f.model_id = m.model_id", clause),
            Entity::Tag => push_key_value(sql, "logged_model_tags", "f.model_id = m.model_id", clause),
            Entity::Attribute | Entity::Dataset => {
                sql.push("(");
                push_comparison(
                    sql,
                    logged_model_column(&clause.key),
                    clause.comparator,
                    &clause.value,
                );
                sql.push(")");
            }
        }
    }
}

/// ` ORDER BY …` for a logged-model search: each key in turn (a metric sorts by its latest value,
/// models without it last), then newest first and the id as the tie-break.
pub fn push_logged_model_order(sql: &mut Sql, order_by: &[LoggedModelOrder]) {
    sql.push(" ORDER BY ");
    for o in order_by {
        let dir = if o.ascending { " ASC, " } else { " DESC, " };
        if o.field.entity == Entity::Metric {
            let datasets: Vec<DatasetRef> = o.dataset.iter().cloned().collect();
            // Twice: once to put models without the metric last, once to sort by it.
            for part in [" IS NULL ASC, ", dir] {
                sql.push(
                    "(SELECT f.value FROM logged_model_metrics f WHERE f.model_id = m.model_id AND f.key = ",
                )
                .bind_str(&o.field.key)
                .push(" AND f.is_nan <> 1");
                push_dataset_restriction(sql, &datasets);
                sql.push(" ORDER BY f.timestamp DESC, f.step DESC LIMIT 1)")
                    .push(part);
            }
        } else {
            let column = logged_model_column(&o.field.key);
            sql.push(column).push(" IS NULL ASC, ").push(column).push(dir);
        }
    }
    sql.push("m.creation_timestamp DESC, m.model_id ASC");
}

/// Append ` AND (…)` for each experiment filter clause.
pub fn push_experiment_filter(sql: &mut Sql, clauses: &[Clause]) {
    for clause in clauses {
        sql.push(" AND ");
        match clause.entity {
            Entity::Tag => {
                push_key_value(
                    sql,
                    "experiment_tags",
                    "f.experiment_id = e.experiment_id",
                    clause,
                );
            }
            _ => {
                sql.push("(");
                push_comparison(
                    sql,
                    experiment_attribute_column(&clause.key),
                    clause.comparator,
                    &clause.value,
                );
                sql.push(")");
            }
        }
    }
}

/// ORDER BY for experiments; default `creation_time DESC`, tie-break `experiment_id DESC`.
pub fn experiment_order(order_by: &[OrderBy]) -> String {
    let mut terms: Vec<String> = order_by
        .iter()
        .map(|ob| {
            let dir = if ob.ascending { "ASC" } else { "DESC" };
            format!("{} {dir}", experiment_attribute_column(&ob.key))
        })
        .collect();
    if terms.is_empty() {
        terms.push("e.creation_time DESC".to_owned());
    }
    terms.push("e.experiment_id DESC".to_owned());
    terms.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{parse_run_filter, parse_run_order_by};

    #[test]
    fn run_filter_binds_every_value() {
        let clauses =
            parse_run_filter("metrics.rmse < 0.5 and params.lr = '0.1' and tags.`team x` ILIKE '%A%'")
                .unwrap();
        let mut sql = Sql::new("SELECT r.run_uuid FROM runs r WHERE 1 = 1");
        push_run_filter(&mut sql, &clauses);
        assert!(!sql.text.contains("0.5") && !sql.text.contains("team x") && !sql.text.contains("%A%"));
        assert_eq!(sql.args.len(), 6);
        assert!(sql.text.contains(
            "LOWER((SELECT f.value FROM run_tags f WHERE f.run_uuid = r.run_uuid AND f.key = $5)) LIKE LOWER($6)"
        ));
        assert!(sql.text.contains(
            "((SELECT f.value FROM latest_metrics f WHERE f.run_uuid = r.run_uuid AND f.key = $1 \
             AND f.is_nan <> 1) < $2)"
        ));
    }

    #[test]
    fn order_by_joins_and_tiebreak() {
        let mut joins = Sql::default();
        let order_by = [
            parse_run_order_by("metrics.acc DESC").unwrap(),
            parse_run_order_by("params.lr").unwrap(),
        ];
        let order = push_run_order(&mut joins, &order_by, LeadingKey::Joined);
        assert_eq!(
            order,
            "(o0.value IS NULL) ASC, o0.value DESC, (o1.value IS NULL) ASC, o1.value ASC, \
             r.start_time DESC, r.run_uuid ASC"
        );
        assert!(joins.text.contains("LEFT JOIN latest_metrics o0"));

        let mut joins = Sql::default();
        let order = push_run_order(&mut joins, &order_by, LeadingKey::Driving);
        assert_eq!(
            order,
            "o0.value DESC, (o1.value IS NULL) ASC, o1.value ASC, r.start_time DESC, r.run_uuid ASC"
        );
        assert!(!joins.text.contains(" o0 ") && joins.text.contains("LEFT JOIN params o1"));

        let mut joins = Sql::default();
        let order = push_run_order(&mut joins, &order_by, LeadingKey::Absent);
        assert_eq!(
            order,
            "(o1.value IS NULL) ASC, o1.value ASC, r.start_time DESC, r.run_uuid ASC"
        );
        assert_eq!(joins.args.len(), 1);
    }
}
