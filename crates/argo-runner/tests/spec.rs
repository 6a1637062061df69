//! The Argo runner against its part of `spec/`: the example args pass its
//! validation, and its Implementation manifest implements the Argo Interface.

use serde_json::Value;
use std::path::PathBuf;

fn read_yaml(relative: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../spec")
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_args_pass_validation() {
    let args = read_yaml("examples/argo-args.yaml");
    argo_runner::validate::validate_spec(&args["workflow"]).unwrap();
}

#[test]
fn the_implementation_implements_the_argo_interface() {
    let interface = read_yaml("manifests/interface/runner/argo/run.yaml");
    let implementation = read_yaml("argo-runner/implementation.yaml");
    assert_eq!(implementation["kind"], "Implementation");
    let path = format!(
        "{}.{}",
        interface["metadata"]["prefix"].as_str().unwrap(),
        interface["metadata"]["name"].as_str().unwrap()
    );
    let implements = &implementation["spec"]["implements"][0];
    assert_eq!(implements["path"], path.as_str());
    assert_eq!(implements["revision"], interface["revision"]);
    // The action runs through the OCI runner Interface it imports.
    let oci = read_yaml("manifests/interface/runner/oci/run.yaml");
    let import = &implementation["spec"]["imports"][0];
    assert_eq!(import["interfaceGroupPath"], oci["metadata"]["prefix"]);
    assert_eq!(import["methods"][0]["name"], oci["metadata"]["name"]);
    assert_eq!(
        implementation["spec"]["action"]["runnerInterface"],
        format!("{}.run", import["alias"].as_str().unwrap()).as_str()
    );
    let image = implementation["spec"]["action"]["args"]["image"]
        .as_str()
        .expect("the Implementation names the runner image");
    assert!(image.contains("argo-runner:"), "{image}");
}
