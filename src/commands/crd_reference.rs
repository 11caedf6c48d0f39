//! `projectsync crd --reference`: the field reference of the ProjectSync CRD
//! as Markdown, generated from the same schema the API server enforces (so
//! it cannot disagree with `kubectl explain`). `docs/crd-reference.md` is its
//! committed output; a test fails when the two drift. Pure: no I/O.

use std::fmt::Write as _;

use serde_json::Value;

use crate::api::crd;

/// The command that regenerates the committed file.
pub const REGENERATE: &str = "cargo run -- crd --reference > docs/crd-reference.md";

/// The Markdown reference of the CRD.
pub fn build_crd_reference() -> String {
    let crd = serde_json::to_value(crd()).expect("the CRD serializes to JSON");
    let spec = &crd["spec"];
    let mut out = String::new();
    let names = &spec["names"];
    let _ = writeln!(out, "# ProjectSync CRD reference\n");
    let _ = writeln!(
        out,
        "<!-- Generated from the Rust types by `{REGENERATE}`. Do not edit: a test fails when this file drifts. -->\n"
    );
    let short: Vec<String> = names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| format!("`{s}`"))
        .collect();
    let _ = writeln!(
        out,
        "API group `{}`, kind `{}`, plural `{}`, short name {}, {} scope. \
         Every field below is also shown by `kubectl explain {}.<field>`.\n",
        text(&spec["group"]),
        text(&names["kind"]),
        text(&names["plural"]),
        short.join(", "),
        text(&spec["scope"]).to_lowercase(),
        text(&names["plural"]),
    );
    for version in spec["versions"].as_array().into_iter().flatten() {
        let name = text(&version["name"]);
        let served = version["served"].as_bool().unwrap_or(false);
        let storage = version["storage"].as_bool().unwrap_or(false);
        let _ = writeln!(out, "## Version `{name}`\n");
        let _ = writeln!(
            out,
            "Served: {}. Storage version: {}. Status subresource: {}.\n",
            yes_no(served),
            yes_no(storage),
            yes_no(version["subresources"].get("status").is_some())
        );
        write_printer_columns(&mut out, version);
        let root = &version["schema"]["openAPIV3Schema"];
        for part in ["spec", "status"] {
            let schema = &root["properties"][part];
            if schema.is_null() {
                continue;
            }
            let _ = writeln!(out, "### `{part}`\n");
            if let Some(description) = schema["description"].as_str() {
                let _ = writeln!(out, "{}\n", description.trim());
            }
            write_rules(&mut out, part, schema);
            let _ = writeln!(
                out,
                "| Field | Type | Default | Constraints | Description |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|");
            write_fields(&mut out, part, schema);
            out.push('\n');
        }
    }
    out
}

fn write_printer_columns(out: &mut String, version: &Value) {
    let Some(columns) = version["additionalPrinterColumns"].as_array() else {
        return;
    };
    let _ = writeln!(out, "### `kubectl get` columns\n");
    let _ = writeln!(out, "| Column | Shown | JSON path | Description |");
    let _ = writeln!(out, "|---|---|---|---|");
    for column in columns {
        let shown = if column["priority"].as_i64().unwrap_or(0) == 0 {
            "always"
        } else {
            "`-o wide`"
        };
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} |",
            text(&column["name"]),
            shown,
            text(&column["jsonPath"]),
            cell(column["description"].as_str().unwrap_or(""))
        );
    }
    out.push('\n');
}

/// CEL rules on an object that involve several fields, shown above its table.
fn write_rules(out: &mut String, path: &str, schema: &Value) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "- Rule on `{path}`: {}", text(&rule["message"]));
    }
    if schema["x-kubernetes-validations"].is_array() {
        out.push('\n');
    }
}

fn write_fields(out: &mut String, path: &str, schema: &Value) {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (name, field) in properties {
        let field_path = format!("{path}.{name}");
        let mut description = field["description"]
            .as_str()
            .unwrap_or("")
            .trim()
            .to_string();
        if required.contains(&name.as_str()) {
            description = format!("**Required.** {description}");
        }
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            field_path,
            type_of(field),
            field
                .get("default")
                .map(|d| format!("`{}`", compact(d)))
                .unwrap_or_default(),
            cell(&constraints(field).join("; ")),
            cell(&description)
        );
        if field["properties"].is_object() {
            write_fields(out, &field_path, field);
        }
        let items = &field["items"];
        if items["properties"].is_object() {
            write_fields(out, &format!("{field_path}[]"), items);
        }
    }
}

fn type_of(field: &Value) -> String {
    if field["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return "integer or string".into();
    }
    let base = match field["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&field["items"])),
        Some(kind) => kind.to_string(),
        None => "any".into(),
    };
    match field["format"].as_str() {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}

fn constraints(field: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = field["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", compact(v))).collect();
        out.push(format!("one of {}", values.join(", ")));
    }
    let number = |key: &str| {
        field[key].as_f64().map(|n| {
            if n.fract() == 0.0 {
                format!("{}", n as i64)
            } else {
                n.to_string()
            }
        })
    };
    match (number("minLength"), number("maxLength")) {
        (Some(min), Some(max)) => out.push(format!("{min} to {max} characters")),
        (None, Some(max)) => out.push(format!("at most {max} characters")),
        (Some(min), None) => out.push(format!("at least {min} characters")),
        (None, None) => {}
    }
    match (number("minimum"), number("maximum")) {
        (Some(min), Some(max)) => out.push(format!("{min} to {max}")),
        (None, Some(max)) => out.push(format!("at most {max}")),
        (Some(min), None) => out.push(format!("at least {min}")),
        (None, None) => {}
    }
    if let Some(max) = number("maxItems") {
        out.push(format!("at most {max} items"));
    }
    if let Some(pattern) = field["pattern"].as_str() {
        out.push(format!("matches `{pattern}`"));
    }
    for rule in field["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(text(&rule["message"]).to_string());
    }
    let items = &field["items"];
    if items.is_object() && !items["properties"].is_object() {
        for item_rule in constraints(items) {
            out.push(format!("each: {item_rule}"));
        }
    }
    out
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

/// A table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_nested_fields_with_types_defaults_and_rules() {
        let doc = build_crd_reference();
        assert!(doc.contains("| `spec.branch` | string |"), "{doc}");
        assert!(doc.contains("| `spec.source.github.owner` |"), "{doc}");
        assert!(
            doc.contains("| `spec.maxFileSize` | integer or string | `1Mi` |"),
            "{doc}"
        );
        assert!(doc.contains("| `spec.include` | []string |"), "{doc}");
        assert!(doc.contains("one of `Retain`, `Delete`"), "{doc}");
        assert!(doc.contains("**Required.**"), "{doc}");
        assert!(doc.contains("| `status.conditions[].type` |"), "{doc}");
    }

    #[test]
    fn cells_stay_on_one_line_and_escape_pipes() {
        assert_eq!(cell("a |\n b"), "a \\| b");
    }
}
