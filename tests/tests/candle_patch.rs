//! The workspace's candle-core carries one change (vendor/candle-core/PATCH.md): the first
//! gradient to reach a tensor is stored as it is, instead of added into a fresh zero tensor.
//! These tests hold the change in place (they fail on the published crate) and its values to
//! the unpatched rule's.

use candle_core::{Device, Tensor, Var};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn the_first_gradient_is_stored_without_a_zero_fill_and_add() {
    let x = Var::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap();
    let y = Var::new(&[0.5f32, 4.0, -1.0], &Device::Cpu).unwrap();
    let z = (x.as_tensor() + y.as_tensor()).unwrap();
    let loss = (&z * &z).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let (gx, gy) = (grads.get(&x).unwrap(), grads.get(&y).unwrap());
    // An addition hands its one upstream gradient to both inputs: stored as it is, it is one
    // tensor; the published crate makes each a new sum of zeros and that gradient.
    assert_eq!(gx.id(), gy.id(), "the gradient was rebuilt (candle-core unpatched?)");
    assert_eq!(values(gx), vec![3.0, 4.0, 4.0]);
}

#[test]
fn gradients_with_several_consumers_still_add_up() {
    let x = Var::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap();
    // x reaches the loss three times: through a product with itself (twice) and a sum.
    let loss = ((x.as_tensor() * x.as_tensor()).unwrap() + x.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(values(grads.get(&x).unwrap()), vec![3.0, -3.0, 7.0]); // 2x + 1
    // A tensor added to itself gets the gradient twice.
    let doubled = (x.as_tensor() + x.as_tensor()).unwrap().sum_all().unwrap();
    assert_eq!(values(doubled.backward().unwrap().get(&x).unwrap()), vec![2.0, 2.0, 2.0]);
}
