"""STNClassifier: every distorted-MNIST table variant builds, jits, is identity-initialised."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.models.stn import STNClassifier

VARIANTS = [(base, transform) for base in ("fcn", "cnn")
            for transform in (None, "affine", "projective", "tps")]


def _filled(shapes, seed=0):
    """Concrete values for abstract params: applying needs values, not the initialisers' compile."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(scale=0.1, size=s.shape), s.dtype), shapes)


@pytest.mark.parametrize("base,transform", VARIANTS)
def test_variant_builds_and_jits_to_logits(base, transform):
    images = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    model = STNClassifier(base=base, transform=transform, width=0.25)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(1), x, train=False), images)
    assert ("spatial_transformer" in shapes["params"]) == (transform is not None)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=True))(_filled(shapes), images)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("base,transform", [("fcn", "affine"), ("fcn", "projective"),
                                            ("cnn", "tps")])
def test_transformer_is_identity_at_init(base, transform):
    images = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    model = STNClassifier(base=base, transform=transform, width=0.25)
    # One compile: init_with_output runs the forward pass and keeps what it sowed.
    _, variables = jax.jit(lambda x: model.init_with_output(
        jax.random.key(1), x, train=False, mutable=True))(images)
    (transformed,) = variables["intermediates"]["transformed"]
    np.testing.assert_allclose(np.asarray(transformed), np.asarray(images), atol=1e-5)
    assert variables["intermediates"]["transform_params"][0].shape[0] == 2


def test_rts_sized_input_and_gradients_through_the_transformer():
    images = jax.random.uniform(jax.random.key(0), (2, 42, 42, 1))
    labels = jnp.array([3, 7])
    model = STNClassifier(base="cnn", transform="affine", width=0.25)
    variables = _filled(jax.eval_shape(lambda x: model.init(jax.random.key(1), x, train=False),
                                       images))

    @jax.jit
    def loss(variables_, images_):
        logits = model.apply(variables_, images_, train=True)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

    grad_vars, grad_images = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, images)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(grad_vars))
    assert np.isfinite(grad_images).all() and np.abs(grad_images).max() > 0
    transformer = grad_vars["params"]["spatial_transformer"]
    # The localisation net, regression layer down to its first convolution, gets a signal.
    assert np.abs(transformer["regression"]["kernel"]).max() > 0
    assert np.abs(transformer["localization"]["Conv_0"]["kernel"]).max() > 0


def test_paper_sizes_are_the_defaults():
    images = jnp.zeros((1, 28, 28, 1))

    def shapes(model):  # abstract init: shapes only, no compute
        return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)

    params = shapes(STNClassifier(base="cnn", transform="tps"))["params"]
    assert params["Conv_0"]["kernel"].shape == (9, 9, 1, 64)
    assert params["Conv_1"]["kernel"].shape == (7, 7, 64, 64)
    localization = params["spatial_transformer"]["localization"]
    assert localization["Conv_0"]["kernel"].shape == (5, 5, 1, 20)
    assert params["spatial_transformer"]["regression"]["kernel"].shape == (20, 32)  # 16 TPS points
    fcn = shapes(STNClassifier(base="fcn", transform="affine"))["params"]
    assert [fcn["spatial_transformer"]["localization"][f"Dense_{i}"]["kernel"].shape[1]
            for i in range(3)] == [32, 32, 32]


@pytest.mark.parametrize("kwargs,shape,match", [
    ({"base": "resnet"}, (1, 28, 28, 1), "valid bases: fcn, cnn"),
    ({"transform": "rotation"}, (1, 28, 28, 1), "valid transforms: None, affine"),
    ({"base": "cnn"}, (1, 16, 16, 1), "at least 24x24"),
])
def test_bad_configuration_raises_a_clear_error(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        STNClassifier(**kwargs).init(jax.random.key(0), jnp.zeros(shape), train=False)
