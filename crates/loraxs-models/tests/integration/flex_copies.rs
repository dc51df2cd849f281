//! The patched burn-flex copy of N-d strided views (patches/README.md)
//! against ndarray, on the layouts the encoder makes and on awkward ones:
//! permutations of 3- to 5-D tensors, transposes of the last two dims,
//! views with an offset, size-1 dims, and sizes on both sides of the
//! parallel threshold. Values must be identical (a copy, no arithmetic).

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, TensorData, backend::Backend};

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
}

/// `x.permute(axes)` then a reshape to 2-D, which needs a contiguous
/// buffer: flex copies there.
fn permuted<B: Backend, const D: usize>(
    shape: [usize; D],
    axes: [isize; D],
    narrow: Option<(usize, usize, usize)>,
) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut x = Tensor::<B, D>::from_data(TensorData::new(values(n), shape), &Default::default());
    if let Some((dim, start, len)) = narrow {
        x = x.narrow(dim, start, len);
    }
    let x = x.permute(axes);
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    x.reshape([rows, dims[D - 1]])
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

fn check<const D: usize>(shape: [usize; D], axes: [isize; D], narrow: Option<(usize, usize, usize)>) {
    let flex = permuted::<Flex, D>(shape, axes, narrow);
    let reference = permuted::<NdArray, D>(shape, axes, narrow);
    assert_eq!(flex, reference, "shape {shape:?} axes {axes:?} narrow {narrow:?}");
}

#[test]
fn strided_views_copy_like_ndarray() {
    // The attention head split and merge of MiniLM (b, t, h, d), small and
    // above the parallel threshold (32·128·12·32 = 1.5 M elements).
    check([2, 5, 3, 4], [0, 2, 1, 3], None);
    check([32, 128, 12, 32], [0, 2, 1, 3], None);
    check([32, 12, 128, 32], [0, 2, 1, 3], None);
    // Keys transposed for q·kᵀ: the innermost stride is not 1.
    check([2, 3, 5, 4], [0, 1, 3, 2], None);
    check([8, 12, 128, 32], [0, 1, 3, 2], None);
    check([8, 12, 128, 32], [2, 0, 3, 1], None);
    // 3-D and 5-D, reversed axes, size-1 dims.
    check([7, 6, 5], [2, 0, 1], None);
    check([7, 1, 5], [1, 2, 0], None);
    check([3, 4, 1, 5, 6], [4, 0, 3, 2, 1], None);
    check([3, 4, 2, 5, 6], [0, 3, 1, 4, 2], None);
    // Views with an offset into a larger buffer.
    check([4, 9, 3, 8], [0, 2, 1, 3], Some((1, 2, 5)));
    check([4, 9, 3, 8], [0, 2, 1, 3], Some((3, 1, 6)));
    check([64, 40, 6, 32], [2, 0, 1, 3], Some((0, 5, 50)));
    // Empty.
    check([0, 3, 2, 4], [0, 2, 1, 3], None);
}

/// The patched `FlexTensor::empty` (patches/README.md) allocates zeroed
/// elements of the dtype's size instead of bytes that were then copied to
/// an aligned buffer: every element size still gives zeros, at sizes that
/// are not multiples of 16 bytes, and the buffers work in arithmetic.
#[test]
fn empty_buffers_are_zeroed_for_every_element_size() {
    use burn::tensor::{Bool, Int};
    let device = Default::default();
    for n in [1, 3, 5, 17, 1001] {
        let f32s = Tensor::<Flex, 2>::zeros([n, 3], &device);
        let sum = f32s.clone().add_scalar(1.0).sum().into_scalar();
        assert_eq!(sum, (n * 3) as f32);
        assert!(
            f32s.into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|&v| v == 0.0)
        );
        let f64s = Tensor::<Flex, 1>::zeros([n], (&device, burn::tensor::DType::F64));
        assert!(f64s.into_data().iter::<f64>().all(|v| v == 0.0));
        let f16s = Tensor::<Flex, 1>::zeros([n], (&device, burn::tensor::DType::F16));
        assert!(f16s.into_data().iter::<f32>().all(|v| v == 0.0));
        let ints = Tensor::<Flex, 2, Int>::zeros([n, 3], &device);
        assert!(ints.into_data().iter::<i64>().all(|v| v == 0));
        let bools = Tensor::<Flex, 1, Bool>::empty([n], &device);
        assert_eq!(bools.dims(), [n]);
        // A matmul's output comes from the same allocation.
        let a = Tensor::<Flex, 2>::ones([n, 2], &device);
        let b = Tensor::<Flex, 2>::ones([2, 5], &device);
        let product = a.matmul(b).into_data().to_vec::<f32>().unwrap();
        assert_eq!(product, vec![2.0; n * 5]);
    }
}
