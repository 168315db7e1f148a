//! Proves that Weft speaks standard ML-DSA-87 (FIPS 204), not a variant: an independent
//! implementation (the pure-Rust `fips204` crate) verifies signatures we make, with our
//! context strings, and we verify signatures it makes.

use fips204::ml_dsa_87;
use fips204::traits::{KeyGen, SerDes, Signer, Verifier};
use weft_crypto::{Keypair, PublicKey, Signature, SigningContext};

#[test]
fn fips204_crate_verifies_our_signatures_in_every_context() {
    let keys = Keypair::generate();
    let public_bytes: [u8; ml_dsa_87::PK_LEN] = keys
        .public
        .as_bytes()
        .try_into()
        .expect("public key length");
    let their_public = ml_dsa_87::PublicKey::try_from_bytes(public_bytes).expect("decodes");
    let message = b"a vertex's canonical bytes";

    for context in SigningContext::ALL {
        let ours = keys.sign(context, message);
        let signature: [u8; ml_dsa_87::SIG_LEN] =
            ours.as_bytes().try_into().expect("signature length");
        assert!(
            their_public.verify(message, &signature, context.as_bytes()),
            "fips204 rejected our {context:?} signature"
        );
        // And it agrees that the context is bound into the signature.
        assert!(!their_public.verify(message, &signature, b"weft/other/v1"));
        assert!(!their_public.verify(b"other bytes", &signature, context.as_bytes()));
    }
}

#[test]
fn we_verify_signatures_made_by_the_fips204_crate() {
    let (their_public, their_secret) = ml_dsa_87::try_keygen().expect("keygen");
    let public = PublicKey::from_bytes(&their_public.into_bytes()).expect("our decoding");
    let message = b"prepare v=3 s=12";

    for context in SigningContext::ALL {
        let theirs = their_secret
            .try_sign(message, context.as_bytes())
            .expect("sign");
        let signature = Signature::from_bytes(&theirs).expect("signature length");
        assert_eq!(public.verify(context, message, &signature), Ok(()));
        let wrong = if context == SigningContext::Vertex {
            SigningContext::Prepare
        } else {
            SigningContext::Vertex
        };
        assert!(public.verify(wrong, message, &signature).is_err());
    }
}

#[test]
fn keys_from_a_fips204_seed_sign_for_us_too() {
    // Deterministic key generation from a 32-byte seed (FIPS 204 ML-DSA.KeyGen_internal)
    // gives a secret key encoding that our implementation can sign with.
    let (their_public, their_secret) = ml_dsa_87::KG::keygen_from_seed(&[7; 32]);
    let secret = weft_crypto::SecretKey::from_bytes(&their_secret.into_bytes()).expect("decodes");
    let signature = secret.sign(SigningContext::Checkpoint, b"checkpoint 100");
    let signature_bytes: [u8; ml_dsa_87::SIG_LEN] =
        signature.as_bytes().try_into().expect("length");
    assert!(their_public.verify(
        b"checkpoint 100",
        &signature_bytes,
        SigningContext::Checkpoint.as_bytes()
    ));
}
