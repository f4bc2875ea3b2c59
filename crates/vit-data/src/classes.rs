//! Class names of the data sets known by name.

/// The digits as class names.
pub fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// Fashion-MNIST's classes in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
