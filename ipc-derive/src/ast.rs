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
    /// Left to serde, whose attributes on the field (or its variant) take
    /// it over: `with`, `skip`, `flatten`, ...
    Serde,
    /// Through `ipc_core::__private::Serde`: plain serde, with an error that
    /// names the fix when the type has no serde impls.
    Plain,
    /// Through `ipc_core::__private::Descriptor`: one descriptor.
    Descriptor,
    /// Through `ipc_core::__private::Carry` in this shape.
    Carried(TokenStream),
}

impl<'a> Input<'a> {
    /// Reads `input`, pushing every error it finds.
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Vec<Error>) -> Option<Self> {
        attr::none_allowed(&input.attrs, "the type itself", errors);
        let body = match &input.data {
            Data::Struct(data) => Body::Struct(fields(&data.fields, false, errors)),
            Data::Enum(data) => Body::Enum(
                data.variants
                    .iter()
                    .map(|variant| {
                        attr::none_allowed(&variant.attrs, "a variant", errors);
                        let serde = attr::serde_takes_over(&variant.attrs);
                        Variant {
                            fields: fields(&variant.fields, serde, errors),
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

/// The fields of a struct or variant; `serde` when the variant's serde
/// attributes take all of them over.
fn fields<'a>(fields: &'a Fields, serde: bool, errors: &mut Vec<Error>) -> Vec<Field<'a>> {
    fields
        .iter()
        .map(|field| {
            let asked = attr::field(&field.attrs, errors);
            let route = if serde || attr::serde_takes_over(&field.attrs) {
                Route::Serde
            } else {
                route(field, asked, errors)
            };
            Field {
                original: field,
                route,
            }
        })
        .collect()
}

fn route(field: &syn::Field, asked: FieldAttr, errors: &mut Vec<Error>) -> Route {
    match asked {
        FieldAttr::Serde => Route::Plain,
        FieldAttr::Fd => match shape::descriptor(&field.ty, errors) {
            shape if shape::is_descriptor(&shape) => Route::Descriptor,
            shape => Route::Carried(shape),
        },
        FieldAttr::Pod => match shape::pod(&field.ty) {
            Some(shape) => Route::Carried(shape),
            None => {
                errors.push(Error::new_spanned(
                    &field.ty,
                    "`#[ipc(pod)]` applies to a `Vec<T>`, `Box<[T]>` or `[T; N]` whose `T` \
                     implements `ipc_core::Pod`",
                ));
                Route::Plain
            }
        },
        FieldAttr::Auto => match shape::of(&field.ty, errors) {
            Some(shape) if shape::is_descriptor(&shape) => Route::Descriptor,
            Some(shape) => Route::Carried(shape),
            None => Route::Plain,
        },
    }
}
