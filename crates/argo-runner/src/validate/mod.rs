//! Static validation of a workflow spec, the checks Argo's own submit makes
//! before anything reaches the API server.
//!
//! The spec stays arbitrary JSON (so no field we do not know is lost); only the
//! fields these checks need are read. Templates referenced through
//! `templateRef` live in other WorkflowTemplates and are not checked here.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The template types Argo knows; a template must have exactly one.
pub const TEMPLATE_TYPES: &[&str] = &[
    "container",
    "containerSet",
    "script",
    "resource",
    "steps",
    "dag",
    "suspend",
    "data",
    "http",
    "plugin",
];

/// Longest name Argo accepts for templates, steps and tasks.
const MAX_NAME_LEN: usize = 128;

/// Why a workflow spec is invalid; each names the field or template at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// Path of the field, for example `spec.templates`.
        field: String,
        /// What it must be, for example `a list`.
        expected: &'static str,
    },
    /// `spec.entrypoint` is missing (and no `workflowTemplateRef` supplies it).
    #[error("spec.entrypoint is required")]
    MissingEntrypoint,
    /// `spec.entrypoint` names no template of the workflow.
    #[error("spec.entrypoint template {0:?} not found")]
    EntrypointNotFound(String),
    /// A name is missing.
    #[error("{field}.name is required")]
    MissingName {
        /// Path of the object without a name.
        field: String,
    },
    /// A name is not a valid Argo name.
    #[error(
        "{field}.name {name:?} is invalid: must be at most 128 characters of letters, digits \
         and '-', starting with a letter or digit"
    )]
    InvalidName {
        /// Path of the named object.
        field: String,
        /// The name.
        name: String,
    },
    /// Two objects that need distinct names share one.
    #[error("{field} name {name:?} is not unique")]
    DuplicateName {
        /// Path of the list the names are in.
        field: String,
        /// The duplicated name.
        name: String,
    },
    /// A template has none of the known template types.
    #[error("templates.{0} has no template type: it needs one of {types}", types = TEMPLATE_TYPES.join(", "))]
    UnknownTemplateType(String),
    /// A template has more than one template type.
    #[error("templates.{template} has multiple template types: {}", types.join(", "))]
    MultipleTemplateTypes {
        /// Name of the template.
        template: String,
        /// The types it has.
        types: Vec<String>,
    },
    /// A step or task names a template the workflow does not have.
    #[error("{field}.template {template:?} not found")]
    TemplateNotFound {
        /// Path of the step or task.
        field: String,
        /// The missing template.
        template: String,
    },
    /// A step or task names no template at all.
    #[error("{field} must name a template (template, templateRef or inline)")]
    NoTemplate {
        /// Path of the step or task.
        field: String,
    },
    /// A DAG task depends on a task that is not in its DAG.
    #[error(
        "templates.{template}.dag.tasks.{task} depends on {dependency:?}, which is not a task of the dag"
    )]
    DependencyNotFound {
        /// Name of the DAG template.
        template: String,
        /// The task with the dependency.
        task: String,
        /// The missing task.
        dependency: String,
    },
    /// A DAG's `target` names a task that is not in the DAG.
    #[error("templates.{template}.dag.target {task:?} is not a task of the dag")]
    TargetNotFound {
        /// Name of the DAG template.
        template: String,
        /// The missing task.
        task: String,
    },
    /// An argument parameter has neither `value` nor `valueFrom`.
    #[error("{field}.{name}.value is required")]
    MissingValue {
        /// Path of the arguments' parameters, for example `spec.arguments.parameters`.
        field: String,
        /// Name of the parameter.
        name: String,
    },
    /// The dependencies of a DAG form a cycle.
    #[error("templates.{template}.dag has a dependency cycle: {}", cycle.join(" -> "))]
    DependencyCycle {
        /// Name of the DAG template.
        template: String,
        /// The tasks of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Validates a workflow spec (the `spec` of a Workflow, as Capact's args hold it).
pub fn validate_spec(spec: &Value) -> Result {
    let spec = object(spec, "spec")?;
    let templates = list(spec.get("templates"), "spec.templates")?;
    let mut names = BTreeSet::new();
    for (index, template) in templates.iter().enumerate() {
        let field = format!("spec.templates[{index}]");
        object(template, &field)?;
        let name = name_of(template, &field)?;
        if !names.insert(name) {
            return Err(ValidationError::DuplicateName {
                field: "spec.templates".into(),
                name: name.to_owned(),
            });
        }
    }
    match spec.get("entrypoint").and_then(Value::as_str) {
        Some(entry) if !entry.is_empty() => {
            if !names.contains(entry) {
                return Err(ValidationError::EntrypointNotFound(entry.to_owned()));
            }
        }
        // A referenced WorkflowTemplate may supply the entrypoint.
        _ if spec.get("workflowTemplateRef").is_some() => {}
        _ => return Err(ValidationError::MissingEntrypoint),
    }
    arguments(spec.get("arguments"), "spec.arguments")?;
    if let Some(on_exit) = spec.get("onExit") {
        let on_exit = on_exit.as_str().ok_or_else(|| ValidationError::WrongType {
            field: "spec.onExit".into(),
            expected: "a string",
        })?;
        if !on_exit.is_empty() && !names.contains(on_exit) {
            return Err(ValidationError::TemplateNotFound {
                field: "spec.onExit".into(),
                template: on_exit.to_owned(),
            });
        }
    }
    for template in templates {
        validate_template(template, &names)?;
    }
    Ok(())
}

fn validate_template(template: &Value, names: &BTreeSet<&str>) -> Result {
    let name = template["name"].as_str().unwrap_or_default();
    let types: Vec<String> = TEMPLATE_TYPES
        .iter()
        .filter(|t| template.get(**t).is_some_and(|v| !v.is_null()))
        .map(|t| (*t).to_owned())
        .collect();
    match types.len() {
        0 => return Err(ValidationError::UnknownTemplateType(name.to_owned())),
        1 => {}
        _ => {
            return Err(ValidationError::MultipleTemplateTypes {
                template: name.to_owned(),
                types,
            });
        }
    }
    let field = format!("templates.{name}");
    for io in ["inputs", "outputs"] {
        parameters(template.get(io), &format!("{field}.{io}"))?;
    }
    if let Some(steps) = template.get("steps") {
        validate_steps(steps, &field, names)?;
    }
    if let Some(dag) = template.get("dag") {
        validate_dag(dag, name, &field, names)?;
    }
    Ok(())
}

/// `steps` is a list of step groups; the steps of a group run in parallel.
fn validate_steps(steps: &Value, field: &str, names: &BTreeSet<&str>) -> Result {
    let groups = list(Some(steps), &format!("{field}.steps"))?;
    for (g, group) in groups.iter().enumerate() {
        let group_field = format!("{field}.steps[{g}]");
        let mut seen = BTreeSet::new();
        for (s, step) in list(Some(group), &group_field)?.iter().enumerate() {
            let step_field = format!("{group_field}[{s}]");
            object(step, &step_field)?;
            let step_name = name_of(step, &step_field)?;
            if !seen.insert(step_name) {
                return Err(ValidationError::DuplicateName {
                    field: group_field,
                    name: step_name.to_owned(),
                });
            }
            let step_field = format!("{group_field}.{step_name}");
            template_reference(step, &step_field, names)?;
            arguments(step.get("arguments"), &format!("{step_field}.arguments"))?;
        }
    }
    Ok(())
}

fn validate_dag(dag: &Value, template: &str, field: &str, names: &BTreeSet<&str>) -> Result {
    let dag_field = format!("{field}.dag");
    object(dag, &dag_field)?;
    let tasks = list(dag.get("tasks"), &format!("{dag_field}.tasks"))?;
    let mut dependencies: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (t, task) in tasks.iter().enumerate() {
        let task_field = format!("{dag_field}.tasks[{t}]");
        object(task, &task_field)?;
        let task_name = name_of(task, &task_field)?;
        if dependencies.contains_key(task_name) {
            return Err(ValidationError::DuplicateName {
                field: format!("{dag_field}.tasks"),
                name: task_name.to_owned(),
            });
        }
        let task_field = format!("{dag_field}.tasks.{task_name}");
        template_reference(task, &task_field, names)?;
        arguments(task.get("arguments"), &format!("{task_field}.arguments"))?;
        let mut deps = Vec::new();
        if let Some(list_deps) = task.get("dependencies") {
            for dep in list(Some(list_deps), &format!("{task_field}.dependencies"))? {
                let dep = dep.as_str().ok_or_else(|| ValidationError::WrongType {
                    field: format!("{task_field}.dependencies"),
                    expected: "a list of task names",
                })?;
                deps.push(dep.to_owned());
            }
        }
        if let Some(depends) = task.get("depends") {
            let depends = depends.as_str().ok_or_else(|| ValidationError::WrongType {
                field: format!("{task_field}.depends"),
                expected: "a string",
            })?;
            deps.extend(depends_tasks(depends));
        }
        dependencies.insert(task_name, deps);
    }
    for (task, deps) in &dependencies {
        if let Some(missing) = deps.iter().find(|d| !dependencies.contains_key(d.as_str())) {
            return Err(ValidationError::DependencyNotFound {
                template: template.to_owned(),
                task: (*task).to_owned(),
                dependency: missing.clone(),
            });
        }
    }
    if let Some(target) = dag.get("target") {
        let target = target.as_str().ok_or_else(|| ValidationError::WrongType {
            field: format!("{dag_field}.target"),
            expected: "a string",
        })?;
        if let Some(missing) = target
            .split_whitespace()
            .find(|t| !dependencies.contains_key(t))
        {
            return Err(ValidationError::TargetNotFound {
                template: template.to_owned(),
                task: missing.to_owned(),
            });
        }
    }
    if let Some(cycle) = find_cycle(&dependencies) {
        return Err(ValidationError::DependencyCycle {
            template: template.to_owned(),
            cycle,
        });
    }
    Ok(())
}

/// Task names in an enhanced `depends` expression such as
/// `(A.Succeeded || B.Failed) && !C`.
fn depends_tasks(expression: &str) -> Vec<String> {
    const RESULTS: &[&str] = &[
        "Succeeded",
        "Failed",
        "Errored",
        "Skipped",
        "Omitted",
        "Daemoned",
        "AnySucceeded",
        "AllFailed",
    ];
    expression
        .split(|c: char| c.is_whitespace() || "()!&|".contains(c))
        .filter(|token| !token.is_empty())
        .map(|token| match token.rsplit_once('.') {
            Some((task, result)) if RESULTS.contains(&result) => task.to_owned(),
            _ => token.to_owned(),
        })
        .collect()
}

/// A cycle in the dependency graph, if any, found by depth-first search.
fn find_cycle(dependencies: &BTreeMap<&str, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        task: &'a str,
        dependencies: &'a BTreeMap<&str, Vec<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(task) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|t| *t == task).unwrap_or(0);
                let mut cycle: Vec<String> =
                    path[start..].iter().map(|t| (*t).to_owned()).collect();
                cycle.push(task.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(task, Mark::Visiting);
        path.push(task);
        for dep in dependencies.get(task).into_iter().flatten() {
            if let Some(cycle) = visit(dep, dependencies, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(task, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    dependencies
        .keys()
        .find_map(|task| visit(task, dependencies, &mut marks, &mut Vec::new()))
}

/// A step or task must name an existing template, or reference one elsewhere, or inline one.
fn template_reference(item: &Value, field: &str, names: &BTreeSet<&str>) -> Result {
    if let Some(template) = item.get("template") {
        let template = template
            .as_str()
            .ok_or_else(|| ValidationError::WrongType {
                field: format!("{field}.template"),
                expected: "a string",
            })?;
        if !names.contains(template) {
            return Err(ValidationError::TemplateNotFound {
                field: field.to_owned(),
                template: template.to_owned(),
            });
        }
        return Ok(());
    }
    if item.get("templateRef").is_some() {
        return Ok(());
    }
    if let Some(inline) = item.get("inline") {
        let template = object(inline, &format!("{field}.inline"))?;
        if template.is_empty() {
            return Err(ValidationError::NoTemplate {
                field: field.to_owned(),
            });
        }
        let mut inline = inline.clone();
        inline["name"] = Value::String(format!("{field}.inline"));
        return validate_template(&inline, names);
    }
    Err(ValidationError::NoTemplate {
        field: field.to_owned(),
    })
}

/// `arguments`: parameters as [`parameters`] checks them, and each with a value,
/// since nothing else supplies one.
fn arguments(holder: Option<&Value>, field: &str) -> Result {
    parameters(holder, field)?;
    let params = holder
        .and_then(|h| h.get("parameters"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for parameter in params {
        let has_value = ["value", "valueFrom"]
            .iter()
            .any(|k| parameter.get(*k).is_some_and(|v| !v.is_null()));
        if !has_value {
            return Err(ValidationError::MissingValue {
                field: format!("{field}.parameters"),
                name: parameter["name"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    Ok(())
}

/// `parameters` (if any) of `inputs`, `outputs` or `arguments`: each named, names unique.
fn parameters(holder: Option<&Value>, field: &str) -> Result {
    let Some(holder) = holder.filter(|h| !h.is_null()) else {
        return Ok(());
    };
    object(holder, field)?;
    let field = format!("{field}.parameters");
    let Some(parameters) = holder.get("parameters") else {
        return Ok(());
    };
    let mut seen = BTreeSet::new();
    for (index, parameter) in list(Some(parameters), &field)?.iter().enumerate() {
        let parameter_field = format!("{field}[{index}]");
        object(parameter, &parameter_field)?;
        let name = match parameter.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name,
            _ => {
                return Err(ValidationError::MissingName {
                    field: parameter_field,
                });
            }
        };
        if !seen.insert(name) {
            return Err(ValidationError::DuplicateName {
                field,
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a serde_json::Map<String, Value>> {
    value.as_object().ok_or_else(|| ValidationError::WrongType {
        field: field.to_owned(),
        expected: "an object",
    })
}

fn list<'a>(value: Option<&'a Value>, field: &str) -> Result<&'a [Value]> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ValidationError::WrongType {
            field: field.to_owned(),
            expected: "a list",
        }),
    }
}

/// The valid name of a template, step or task.
fn name_of<'a>(item: &'a Value, field: &str) -> Result<&'a str> {
    let name = match item.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name,
        _ => {
            return Err(ValidationError::MissingName {
                field: field.to_owned(),
            });
        }
    };
    let valid = name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        return Err(ValidationError::InvalidName {
            field: field.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests;
