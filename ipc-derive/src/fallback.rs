//! When the input is wrong: its errors, and stub impls so that the rest of
//! the user's crate does not add a cascade of "Serialize is not implemented".

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, Error};

pub fn expand(input: &DeriveInput, errors: Vec<Error>) -> TokenStream {
    let errors = errors.into_iter().map(|e| e.to_compile_error());
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let serde = quote!(::ipc_core::__private::serde);
    // Lifetime parameters are an error already; the stub names none of its own.
    let stub = input.generics.lifetimes().next().is_none();
    let stubs = stub.then(|| {
        let mut de_generics = input.generics.clone();
        de_generics.params.insert(0, syn::parse_quote!('de));
        let (de_impl_generics, _, _) = de_generics.split_for_impl();
        quote! {
            #[automatically_derived]
            impl #impl_generics #serde::Serialize for #name #ty_generics #where_clause {
                fn serialize<__S>(&self, _: __S) -> ::core::result::Result<__S::Ok, __S::Error>
                where
                    __S: #serde::Serializer,
                {
                    ::core::unreachable!()
                }
            }
            #[automatically_derived]
            impl #de_impl_generics #serde::Deserialize<'de> for #name #ty_generics #where_clause {
                fn deserialize<__D>(_: __D) -> ::core::result::Result<Self, __D::Error>
                where
                    __D: #serde::Deserializer<'de>,
                {
                    ::core::unreachable!()
                }
            }
        }
    });
    quote! {
        #(#errors)*
        #stubs
    }
}
