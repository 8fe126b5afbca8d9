//! The type's structure as written, for the connection handshake: its name,
//! generics, fields with their types, variants, and serde attributes (they
//! change the wire format too). Module paths are left out, so a type
//! reached through two crates matches itself.

use quote::ToTokens;
use syn::{Attribute, Data, Fields};

use crate::ast::Input;

pub fn of(input: &Input<'_>) -> String {
    let original = input.original;
    let mut out = String::new();
    attrs(&original.attrs, &mut out);
    let generics = tokens(&original.generics);
    match &original.data {
        Data::Struct(data) => {
            out.push_str(&format!("struct {}{generics}", original.ident));
            fields(&data.fields, &mut out);
        }
        Data::Enum(data) => {
            out.push_str(&format!("enum {}{generics}{{", original.ident));
            for variant in &data.variants {
                attrs(&variant.attrs, &mut out);
                out.push_str(&variant.ident.to_string());
                fields(&variant.fields, &mut out);
                out.push(',');
            }
            out.push('}');
        }
        Data::Union(_) => {}
    }
    out
}

fn fields(fields: &Fields, out: &mut String) {
    let (open, close) = match fields {
        Fields::Named(_) => ('{', '}'),
        Fields::Unnamed(_) => ('(', ')'),
        Fields::Unit => return,
    };
    out.push(open);
    for field in fields {
        attrs(&field.attrs, out);
        if let Some(name) = &field.ident {
            out.push_str(&format!("{name}:"));
        }
        out.push_str(&tokens(&field.ty));
        out.push(',');
    }
    out.push(close);
}

fn attrs(attrs: &[Attribute], out: &mut String) {
    for attr in attrs {
        if attr.path().is_ident("serde") || attr.path().is_ident("ipc") {
            out.push_str(&tokens(attr));
        }
    }
}

/// Tokens as text without the spaces `to_string` puts between them.
fn tokens(node: &impl ToTokens) -> String {
    node.to_token_stream()
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}
