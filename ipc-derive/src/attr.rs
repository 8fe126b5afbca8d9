//! `#[ipc(...)]` attributes.

use syn::{Attribute, Error};

/// How the user asked a field to be carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldAttr {
    /// No `#[ipc]`: decided by the field's type.
    Auto,
    /// `#[ipc(fd)]`: the field's type owns one descriptor.
    Fd,
    /// `#[ipc(serde)]`: plain serde, whatever the type's name.
    Serde,
}

/// Whether a field has `#[serde(with | serialize_with | deserialize_with)]`.
pub fn has_serde_with(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .any(|a| {
            let mut with = false;
            // A serde attribute that does not parse as nested metas is
            // serde's to report; it counts as no `with` here.
            let _ = a.parse_nested_meta(|meta| {
                let path = &meta.path;
                with |= ["with", "serialize_with", "deserialize_with"]
                    .iter()
                    .any(|name| path.is_ident(name));
                // Skip the value, if any: `= "path"`.
                if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<syn::Expr>()?;
                }
                Ok(())
            });
            with
        })
}

/// Reads the `#[ipc(...)]` attributes of a field, pushing any error.
pub fn field(attrs: &[Attribute], errors: &mut Vec<Error>) -> FieldAttr {
    let mut found: Option<(FieldAttr, &Attribute)> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("ipc")) {
        let result =
            attr.parse_nested_meta(|meta| {
                let kind = if meta.path.is_ident("fd") {
                    FieldAttr::Fd
                } else if meta.path.is_ident("serde") {
                    FieldAttr::Serde
                } else {
                    return Err(meta.error(format!(
                        "unknown ipc attribute `{}`; expected `#[ipc(fd)]` or `#[ipc(serde)]`",
                        path_text(&meta.path)
                    )));
                };
                match found {
                    Some((previous, _)) if previous != kind => Err(meta
                        .error("`#[ipc(fd)]` and `#[ipc(serde)]` contradict each other; keep one")),
                    _ => {
                        found = Some((kind, attr));
                        Ok(())
                    }
                }
            });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    found.map_or(FieldAttr::Auto, |(kind, _)| kind)
}

/// Pushes an error for every `#[ipc]` where none belongs (the type itself, a
/// variant).
pub fn none_allowed(attrs: &[Attribute], place: &str, errors: &mut Vec<Error>) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("ipc")) {
        errors.push(Error::new_spanned(
            attr,
            format!("`#[ipc(...)]` does not apply to {place}; put `#[ipc(fd)]` or `#[ipc(serde)]` on a field"),
        ));
    }
}

fn path_text(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}
