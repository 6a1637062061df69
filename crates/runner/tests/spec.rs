//! The runner contract in `spec/`: the examples validate against the schemas, the
//! Rust types read them and write them back, and schema and types reject the same
//! bad documents.

use runner::{Context, RunStatus};
use serde_json::{Value, json};
use std::path::PathBuf;

fn spec_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec")
        .join(relative)
}

fn read_yaml(relative: &str) -> Value {
    let path = spec_path(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(schema: &Value) -> jsonschema::Validator {
    // The schemas must themselves be valid draft-07 schemas.
    jsonschema::draft7::meta::validate(schema).expect("schema is a valid draft-07 schema");
    jsonschema::validator_for(schema).expect("schema compiles")
}

fn schema_file(relative: &str) -> jsonschema::Validator {
    validator(&read_yaml(relative))
}

/// The args schema embedded in an OCF Interface manifest.
fn interface_args_schema(relative: &str) -> jsonschema::Validator {
    let manifest = read_yaml(relative);
    assert_eq!(manifest["kind"], "Interface");
    assert_eq!(manifest["spec"]["abstract"], true);
    let text = manifest["spec"]["input"]["parameters"]["input-parameters"]["jsonSchema"]["value"]
        .as_str()
        .expect("the Interface embeds its args schema as a JSON string");
    validator(&serde_json::from_str(text).expect("embedded schema is JSON"))
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:?}"
    );
}

#[test]
fn context_example_validates_and_round_trips() {
    let schema = schema_file("schemas/runner-context.schema.json");
    let example = read_yaml("examples/context.yaml");
    assert_valid(&schema, &example, "examples/context.yaml");

    let context: Context = serde_json::from_value(example.clone()).unwrap();
    assert_eq!(context.timeout.0, std::time::Duration::from_secs(600));
    let written = serde_json::to_value(&context).unwrap();
    assert_valid(&schema, &written, "the context as the Rust type writes it");
    // Everything comes back unchanged except the spelling of the duration (Go's).
    let mut expected = example;
    expected["timeout"] = json!("10m0s");
    assert_eq!(written, expected);
    assert_eq!(serde_json::from_value::<Context>(written).unwrap(), context);
}

/// A change that makes a valid context invalid.
type Edit = fn(&mut Value);

#[test]
fn schema_and_type_reject_the_same_bad_contexts() {
    let schema = schema_file("schemas/runner-context.schema.json");
    let example = read_yaml("examples/context.yaml");
    let edits: Vec<(&str, Edit)> = vec![
        ("missing name", |v| {
            drop(v.as_object_mut().unwrap().remove("name"))
        }),
        ("dryRun as a string", |v| v["dryRun"] = json!("yes")),
        ("unknown unit", |v| v["timeout"] = json!("10x")),
        ("number without unit", |v| v["timeout"] = json!("10")),
        ("negative timeout", |v| v["timeout"] = json!("-1s")),
        ("unknown field", |v| v["dryrun"] = json!(true)),
        ("missing namespace", |v| {
            drop(v["platform"].as_object_mut().unwrap().remove("namespace"))
        }),
        ("uid as a number", |v| {
            v["platform"]["ownerRef"]["uid"] = json!(7)
        }),
    ];
    for (what, edit) in edits {
        let mut bad = example.clone();
        edit(&mut bad);
        assert!(
            !schema.is_valid(&bad),
            "schema accepts a context with {what}"
        );
        assert!(
            serde_json::from_value::<Context>(bad).is_err(),
            "the Rust type accepts a context with {what}"
        );
    }
    // Both accept what Go accepts: a bare zero, nanoseconds, fractions, micro signs.
    for timeout in [
        json!("0"),
        json!(0),
        json!(1_500_000_000),
        json!("1.5s"),
        json!("2h45m0.5s"),
        json!("3\u{b5}s"),
    ] {
        let mut good = example.clone();
        good["timeout"] = timeout.clone();
        assert!(schema.is_valid(&good), "schema rejects timeout {timeout}");
        serde_json::from_value::<Context>(good)
            .unwrap_or_else(|e| panic!("the Rust type rejects timeout {timeout}: {e}"));
    }
}

#[test]
fn run_status_example_validates_and_round_trips() {
    let schema = schema_file("schemas/run-status.schema.json");
    let example = read_yaml("examples/run-status.json");
    assert_valid(&schema, &example, "examples/run-status.json");
    let status: RunStatus = serde_json::from_value(example.clone()).unwrap();
    assert!(status.succeeded);
    assert_eq!(serde_json::to_value(&status).unwrap(), example);

    // A runner that reported nothing: runnerStatus is null, still valid both ways.
    let failed = RunStatus {
        runner_status: None,
        succeeded: false,
        message: "runner timed out after 10m0s".into(),
        exit_code: 124,
        timed_out: true,
        started_at: "2026-11-28T11:00:00Z".into(),
        finished_at: "2026-11-28T11:10:00.1Z".into(),
    };
    let written = serde_json::to_value(&failed).unwrap();
    assert_eq!(written["runnerStatus"], Value::Null);
    assert_valid(&schema, &written, "a timed-out run status");
    assert_eq!(
        serde_json::from_value::<RunStatus>(written).unwrap(),
        failed
    );

    let mut bad = example;
    bad.as_object_mut().unwrap().remove("succeeded");
    assert!(!schema.is_valid(&bad));
    assert!(serde_json::from_value::<RunStatus>(bad).is_err());
}

#[test]
fn argo_args_example_matches_the_argo_interface() {
    let schema = interface_args_schema("manifests/interface/runner/argo/run.yaml");
    let example = read_yaml("examples/argo-args.yaml");
    assert_valid(&schema, &example, "examples/argo-args.yaml");
    assert_eq!(
        read_yaml("manifests/interface/runner/argo/run.yaml")["metadata"]["prefix"],
        "cap.interface.runner.argo"
    );
    let mut bad = example;
    bad["workflow"]
        .as_object_mut()
        .unwrap()
        .remove("entrypoint");
    assert!(
        !schema.is_valid(&bad),
        "a workflow without entrypoint must be rejected"
    );
    assert!(
        !schema.is_valid(&json!({"steps": []})),
        "args without workflow must be rejected"
    );
}

#[test]
fn sample_args_example_matches_the_generic_oci_interface() {
    let schema = interface_args_schema("manifests/interface/runner/oci/run.yaml");
    assert_valid(
        &schema,
        &read_yaml("examples/sample-args.yaml"),
        "examples/sample-args.yaml",
    );
    assert!(!schema.is_valid(&json!(["not", "an", "object"])));
}

#[test]
fn the_sample_runner_bundle_inputs_follow_the_contract() {
    let schema = schema_file("schemas/runner-context.schema.json");
    let context = read_yaml("../bundles/sample-runner/context.yaml");
    assert_valid(&schema, &context, "bundles/sample-runner/context.yaml");
    serde_json::from_value::<Context>(context).unwrap();
    let args = interface_args_schema("manifests/interface/runner/oci/run.yaml");
    assert_valid(
        &args,
        &read_yaml("../bundles/sample-runner/args.yaml"),
        "bundles/sample-runner/args.yaml",
    );
}
