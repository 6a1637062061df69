//! Unit tests of the workflow validation.

use super::*;
use serde_json::json;

fn container(name: &str) -> Value {
    json!({"name": name, "container": {"image": "busybox"}})
}

fn dag(tasks: Value) -> Value {
    json!({
        "entrypoint": "main",
        "templates": [{"name": "main", "dag": {"tasks": tasks}}, container("work")],
    })
}

#[test]
fn a_valid_steps_and_dag_workflow_passes() {
    let spec = json!({
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": "message", "value": "hi"}]},
        "templates": [
            {"name": "main", "steps": [[{"name": "a", "template": "work"}], [{"name": "b", "template": "graph"}]]},
            {"name": "graph", "dag": {"tasks": [
                {"name": "x", "template": "work"},
                {"name": "y", "template": "work", "dependencies": ["x"]},
                {"name": "z", "template": "work", "depends": "(x.Succeeded || y.Failed) && !y"},
            ]}},
            {"name": "work", "inputs": {"parameters": [{"name": "p"}]}, "container": {"image": "busybox"}},
            {"name": "ext", "steps": [[{"name": "r", "templateRef": {"name": "other", "template": "t"}}]]},
        ],
    });
    assert_eq!(validate_spec(&spec), Ok(()));
}

#[test]
fn entrypoint_must_exist() {
    let spec = json!({"entrypoint": "nope", "templates": [container("main")]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "spec.entrypoint template \"nope\" not found"
    );
    let spec = json!({"templates": [container("main")]});
    assert_eq!(
        validate_spec(&spec),
        Err(ValidationError::MissingEntrypoint)
    );
}

#[test]
fn template_names_are_unique_and_valid() {
    let spec = json!({"entrypoint": "main", "templates": [container("main"), container("main")]});
    assert!(
        matches!(validate_spec(&spec), Err(ValidationError::DuplicateName { name, .. }) if name == "main")
    );
    let spec =
        json!({"entrypoint": "main", "templates": [container("main"), container("bad_name")]});
    assert!(
        matches!(validate_spec(&spec), Err(ValidationError::InvalidName { name, .. }) if name == "bad_name")
    );
    let spec = json!({"entrypoint": "main", "templates": [container("main"), {"container": {}}]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "spec.templates[1].name is required"
    );
}

#[test]
fn templates_have_exactly_one_type() {
    let spec = json!({"entrypoint": "main", "templates": [{"name": "main"}]});
    assert!(
        validate_spec(&spec)
            .unwrap_err()
            .to_string()
            .starts_with("templates.main has no template type")
    );
    let spec = json!({"entrypoint": "main", "templates": [
        {"name": "main", "container": {"image": "x"}, "script": {"source": "y"}}
    ]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main has multiple template types: container, script"
    );
}

#[test]
fn steps_must_name_existing_templates() {
    let spec = json!({"entrypoint": "main", "templates": [
        {"name": "main", "steps": [[{"name": "one", "template": "missing"}]]}
    ]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main.steps[0].one.template \"missing\" not found"
    );
}

#[test]
fn dag_dependencies_must_exist_and_not_cycle() {
    let spec = dag(json!([{"name": "a", "template": "work", "dependencies": ["ghost"]}]));
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main.dag.tasks.a depends on \"ghost\", which is not a task of the dag"
    );
    let spec = dag(json!([
        {"name": "a", "template": "work", "dependencies": ["c"]},
        {"name": "b", "template": "work", "depends": "a.Succeeded"},
        {"name": "c", "template": "work", "depends": "b"},
    ]));
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main.dag has a dependency cycle: a -> c -> b -> a"
    );
    let spec = dag(json!([{"name": "a", "template": "nope"}]));
    assert!(
        matches!(validate_spec(&spec), Err(ValidationError::TemplateNotFound { template, .. }) if template == "nope")
    );
}

#[test]
fn parameters_need_names() {
    let spec = json!({
        "entrypoint": "main",
        "arguments": {"parameters": [{"value": "x"}]},
        "templates": [container("main")],
    });
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "spec.arguments.parameters[0].name is required"
    );
    let spec = json!({"entrypoint": "main", "templates": [
        {"name": "main", "container": {"image": "x"}, "outputs": {"parameters": [{"name": "o"}, {"name": "o"}]}}
    ]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main.outputs.parameters name \"o\" is not unique"
    );
}

#[test]
fn arguments_need_values() {
    let spec = json!({
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": "message"}]},
        "templates": [container("main")],
    });
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "spec.arguments.parameters.message.value is required"
    );
    let spec = json!({"entrypoint": "main", "templates": [
        {"name": "main", "steps": [[{"name": "s", "template": "work",
            "arguments": {"parameters": [{"name": "p", "valueFrom": {"path": "/x"}}, {"name": "q"}]}}]]},
        container("work"),
    ]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main.steps[0].s.arguments.parameters.q.value is required"
    );
}

#[test]
fn on_exit_and_dag_target_must_exist() {
    let spec = json!({"entrypoint": "main", "onExit": "cleanup", "templates": [container("main")]});
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "spec.onExit.template \"cleanup\" not found"
    );
    let mut spec = dag(json!([{"name": "a", "template": "work"}]));
    spec["templates"][0]["dag"]["target"] = json!("a b");
    assert_eq!(
        validate_spec(&spec).unwrap_err().to_string(),
        "templates.main.dag.target \"b\" is not a task of the dag"
    );
}

#[test]
fn wrong_types_name_the_field() {
    assert_eq!(
        validate_spec(&json!({"entrypoint": "main", "templates": {}}))
            .unwrap_err()
            .to_string(),
        "spec.templates must be a list"
    );
    assert_eq!(
        validate_spec(&json!("text")).unwrap_err().to_string(),
        "spec must be an object"
    );
}
