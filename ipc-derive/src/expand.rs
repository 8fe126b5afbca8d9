//! Writes the code: a hidden serde `remote` shadow of the user's type whose
//! descriptor fields go through `ipc_core::__private`, and `Serialize` /
//! `Deserialize` impls for the user's type that call it.

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    parse_quote, Attribute, Data, DeriveInput, Error, Fields, GenericParam, Generics, Ident,
    Lifetime, LifetimeParam, LitStr, Type, WherePredicate,
};

use crate::ast::{Body, Field, Input, Route};
use crate::valid;

/// The derive: code, or every error found in the input.
pub fn derive(input: &DeriveInput) -> Result<TokenStream, Vec<Error>> {
    let mut errors = Vec::new();
    let parsed = Input::from_syn(input, &mut errors);
    if let Some(parsed) = &parsed {
        valid::check(parsed, &mut errors);
    }
    match parsed {
        Some(parsed) if errors.is_empty() => Ok(expand(&parsed)),
        _ => Err(errors),
    }
}

fn expand(input: &Input<'_>) -> TokenStream {
    let original = input.original;
    let name = &original.ident;
    let shadow_name = Ident::new("__IpcShadow", Span::call_site());
    let bounds = Bounds::of(input);
    let shadow = shadow(input, &shadow_name, &bounds);

    let (impl_generics, ty_generics, _) = original.generics.split_for_impl();
    let turbofish = ty_generics.as_turbofish();
    let ser_where = where_clause(&original.generics, &bounds.serialize);
    let de_where = where_clause(&original.generics, &bounds.deserialize);
    let de_generics = with_de_lifetime(&original.generics);
    let (de_impl_generics, _, _) = de_generics.split_for_impl();
    let serde = quote!(::ipc_core::__private::serde);
    let type_name = LitStr::new(&name.to_string(), Span::call_site());
    let pieces = crate::structure::pieces(input)
        .into_iter()
        .map(|piece| LitStr::new(&piece, Span::call_site()));
    let describers = input.fields().map(describer);

    quote! {
        #[doc(hidden)]
        const _: () = {
            #shadow

            #[automatically_derived]
            impl #impl_generics #serde::Serialize for #name #ty_generics #ser_where {
                fn serialize<__S>(
                    &self,
                    __serializer: __S,
                ) -> ::core::result::Result<__S::Ok, __S::Error>
                where
                    __S: #serde::Serializer,
                {
                    #shadow_name #turbofish::serialize(self, __serializer)
                }
            }

            #[automatically_derived]
            impl #de_impl_generics #serde::Deserialize<'de> for #name #ty_generics #de_where {
                fn deserialize<__D>(
                    __deserializer: __D,
                ) -> ::core::result::Result<Self, __D::Error>
                where
                    __D: #serde::Deserializer<'de>,
                {
                    if ::ipc_core::__private::probing() {
                        ::ipc_core::__private::record::<Self>(
                            #type_name,
                            &[#(#pieces),*],
                            &[#(#describers),*],
                        );
                        return ::core::result::Result::Err(
                            <__D::Error as #serde::de::Error>::custom("type probe"),
                        );
                    }
                    #shadow_name #turbofish::deserialize(__deserializer)
                }
            }
        };
    }
}

/// The trait a routed field travels through, and the field's type.
fn route_trait(route: &Route) -> Option<TokenStream> {
    let private = quote!(::ipc_core::__private);
    match route {
        Route::Serde => None,
        Route::Plain => Some(quote!(#private::Serde)),
        Route::Descriptor => Some(quote!(#private::Descriptor)),
        Route::Carried(shape) => Some(quote!(#private::Walk<#shape>)),
    }
}

/// A function that describes the field's type for the handshake. It names
/// the same trait, at the same span, as the field's serialize and
/// deserialize paths, so a type that cannot travel is one error, not three.
fn describer(field: &Field<'_>) -> TokenStream {
    let ty = &field.original.ty;
    let span = ty.span();
    match route_trait(&field.route) {
        None => quote!(::ipc_core::__private::named::<#ty> as ::ipc_core::__private::Describe),
        Some(route) => quote_spanned! {span=>
            (|| <_ as #route>::describe(::core::marker::PhantomData::<#ty>))
                as ::ipc_core::__private::Describe
        },
    }
}

/// The shadow: the user's type renamed, with only its serde attributes, and
/// `serialize_with`/`deserialize_with` on every routed field.
fn shadow(input: &Input<'_>, shadow_name: &Ident, bounds: &Bounds) -> TokenStream {
    let original = input.original;
    let mut shadow = original.clone();
    shadow.ident = shadow_name.clone();
    shadow.vis = syn::Visibility::Inherited;
    keep_serde_attrs(&mut shadow.attrs);
    let routes: Vec<&Field<'_>> = input.fields().collect();
    let mut routes = routes.into_iter();
    match &mut shadow.data {
        Data::Struct(data) => route_fields(&mut data.fields, &mut routes),
        Data::Enum(data) => {
            for variant in &mut data.variants {
                keep_serde_attrs(&mut variant.attrs);
                route_fields(&mut variant.fields, &mut routes);
            }
        }
        Data::Union(_) => {}
    }
    debug_assert!(matches!(input.body, Body::Struct(_) | Body::Enum(_)));

    let remote = LitStr::new(&original.ident.to_string(), original.ident.span());
    let serialize_bound = LitStr::new(&joined(&bounds.serialize), Span::call_site());
    let deserialize_bound = LitStr::new(&joined(&bounds.deserialize), Span::call_site());
    let serde = quote!(::ipc_core::__private::serde);
    quote! {
        #[derive(#serde::Serialize, #serde::Deserialize)]
        #[serde(crate = "::ipc_core::__private::serde")]
        #[serde(remote = #remote)]
        #[serde(bound(serialize = #serialize_bound, deserialize = #deserialize_bound))]
        #[allow(dead_code, non_camel_case_types, clippy::all)]
        #shadow
    }
}

fn route_fields<'i, 'a: 'i>(fields: &mut Fields, routes: &mut impl Iterator<Item = &'i Field<'a>>) {
    for field in fields.iter_mut() {
        keep_serde_attrs(&mut field.attrs);
        let Some(route) = routes.next() else { return };
        let Some(through) = route_trait(&route.route) else {
            continue;
        };
        let (serialize, deserialize) = (
            format!("<_ as {through}>::carry"),
            format!("<_ as {through}>::fetch"),
        );
        // serde gives the parsed path the span of the string, so a type
        // that cannot travel is reported on the field's type.
        let span = field.ty.span();
        let serialize = LitStr::new(&serialize, span);
        let deserialize = LitStr::new(&deserialize, span);
        field.attrs.push(parse_quote!(
            #[serde(serialize_with = #serialize, deserialize_with = #deserialize)]
        ));
    }
}

fn keep_serde_attrs(attrs: &mut Vec<Attribute>) {
    attrs.retain(|a| a.path().is_ident("serde"));
}

/// The where-clause predicates of the two impls (and of the shadow).
struct Bounds {
    serialize: Vec<WherePredicate>,
    deserialize: Vec<WherePredicate>,
}

impl Bounds {
    /// A routed field whose type names a type parameter needs the trait it
    /// travels through (`Serde`, `Descriptor`, `Carry` in its shape): its
    /// error names the fix when the type a user picks cannot travel. A type
    /// parameter in a field that serde takes over needs serde's traits.
    fn of(input: &Input<'_>) -> Bounds {
        let params: BTreeSet<Ident> = input
            .original
            .generics
            .type_params()
            .map(|p| p.ident.clone())
            .collect();
        let serde = quote!(::ipc_core::__private::serde);
        let mut plain = BTreeSet::new();
        let mut routed: Vec<WherePredicate> = Vec::new();
        for field in input.fields() {
            let used = params_in(&field.original.ty, &params);
            if used.is_empty() {
                continue;
            }
            let ty = &field.original.ty;
            match route_trait(&field.route) {
                None => plain.extend(used),
                Some(through) => {
                    let predicate: WherePredicate = parse_quote!(#ty: #through);
                    if !routed.contains(&predicate) {
                        routed.push(predicate);
                    }
                }
            }
        }
        let mut serialize: Vec<WherePredicate> = plain
            .iter()
            .map(|p| parse_quote!(#p: #serde::Serialize))
            .collect();
        let mut deserialize: Vec<WherePredicate> = plain
            .iter()
            .map(|p| parse_quote!(#p: #serde::Deserialize<'de>))
            .collect();
        serialize.extend(routed.iter().cloned());
        deserialize.extend(routed);
        Bounds {
            serialize,
            deserialize,
        }
    }
}

fn params_in(ty: &Type, params: &BTreeSet<Ident>) -> BTreeSet<Ident> {
    struct Find<'p> {
        params: &'p BTreeSet<Ident>,
        found: BTreeSet<Ident>,
    }
    impl<'ast> Visit<'ast> for Find<'_> {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            if let Some(first) = path.segments.first() {
                if self.params.contains(&first.ident) {
                    self.found.insert(first.ident.clone());
                }
            }
            syn::visit::visit_path(self, path);
        }
    }
    let mut find = Find {
        params,
        found: BTreeSet::new(),
    };
    find.visit_type(ty);
    find.found
}

fn joined(predicates: &[WherePredicate]) -> String {
    predicates
        .iter()
        .map(|p| p.to_token_stream().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn where_clause(generics: &Generics, extra: &[WherePredicate]) -> TokenStream {
    let mut predicates: Vec<WherePredicate> = generics
        .where_clause
        .as_ref()
        .map(|w| w.predicates.iter().cloned().collect())
        .unwrap_or_default();
    predicates.extend(extra.iter().cloned());
    if predicates.is_empty() {
        TokenStream::new()
    } else {
        quote!(where #(#predicates),*)
    }
}

fn with_de_lifetime(generics: &Generics) -> Generics {
    let mut generics = generics.clone();
    let de = Lifetime::new("'de", Span::call_site());
    generics
        .params
        .insert(0, GenericParam::Lifetime(LifetimeParam::new(de)));
    generics
}
