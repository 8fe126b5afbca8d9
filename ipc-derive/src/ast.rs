//! The input as this derive sees it: fields with the route each one takes,
//! each keeping its syn node for spans.

use proc_macro2::TokenStream;
use syn::{Data, DeriveInput, Error, Fields};

use crate::attr::{self, FieldAttr};
use crate::shape;

/// A struct or an enum to derive for.
pub struct Input<'a> {
    pub original: &'a DeriveInput,
    pub body: Body<'a>,
}

pub enum Body<'a> {
    Struct(Vec<Field<'a>>),
    Enum(Vec<Variant<'a>>),
}

pub struct Variant<'a> {
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub original: &'a syn::Field,
    pub route: Route,
}

/// How a field travels.
pub enum Route {
    /// Through its own serde impls.
    Plain,
    /// Through `ipc_core::__private::Carry` in this shape.
    Carried(TokenStream),
    /// `#[ipc(fd)]`: carried as one descriptor, checked to be one.
    Descriptor(TokenStream),
}

impl Route {
    pub fn shape(&self) -> Option<&TokenStream> {
        match self {
            Route::Plain => None,
            Route::Carried(s) | Route::Descriptor(s) => Some(s),
        }
    }
}

impl<'a> Input<'a> {
    /// Reads `input`, pushing every error it finds.
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Vec<Error>) -> Option<Self> {
        attr::none_allowed(&input.attrs, "the type itself", errors);
        let body = match &input.data {
            Data::Struct(data) => Body::Struct(fields(&data.fields, errors)),
            Data::Enum(data) => Body::Enum(
                data.variants
                    .iter()
                    .map(|variant| {
                        attr::none_allowed(&variant.attrs, "a variant", errors);
                        Variant {
                            fields: fields(&variant.fields, errors),
                        }
                    })
                    .collect(),
            ),
            Data::Union(data) => {
                errors.push(Error::new_spanned(
                    data.union_token,
                    "IpcMessage cannot be derived for a union: the receiver could not tell which \
                     field holds a descriptor; use an enum",
                ));
                return None;
            }
        };
        Some(Input {
            original: input,
            body,
        })
    }

    /// Every field, of every variant.
    pub fn fields(&self) -> impl Iterator<Item = &Field<'a>> {
        let (structs, enums) = match &self.body {
            Body::Struct(fields) => (Some(fields.iter()), None),
            Body::Enum(variants) => (None, Some(variants.iter().flat_map(|v| v.fields.iter()))),
        };
        structs
            .into_iter()
            .flatten()
            .chain(enums.into_iter().flatten())
    }
}

fn fields<'a>(fields: &'a Fields, errors: &mut Vec<Error>) -> Vec<Field<'a>> {
    fields
        .iter()
        .map(|field| {
            let route = match attr::field(&field.attrs, errors) {
                FieldAttr::Serde => Route::Plain,
                FieldAttr::Fd => Route::Descriptor(shape::descriptor()),
                FieldAttr::Auto => match shape::of(&field.ty) {
                    // Bytes carried as bytes are only quicker: a field
                    // with its own `serde(with)` keeps it.
                    Some(shape)
                        if !shape::carries_descriptors(&shape)
                            && attr::has_serde_with(&field.attrs) =>
                    {
                        Route::Plain
                    }
                    Some(shape) => Route::Carried(shape),
                    None => Route::Plain,
                },
            };
            Field {
                original: field,
                route,
            }
        })
        .collect()
}
