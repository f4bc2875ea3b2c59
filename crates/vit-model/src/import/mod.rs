//! Pretrained weights from other libraries, read into this crate's parameter layout.
//!
//! - [`hf`]: Hugging Face `transformers` ViTs (the `google/vit-base-patch16-224` layout).
//! - [`timm`]: timm ViTs as timm saves them for the hub (`timm/vit_base_patch16_224.*`,
//!   DeiT), class-token models.
//!
//! Each records the preprocessing its weights expect in the checkpoint metadata.

pub mod hf;
pub mod timm;
