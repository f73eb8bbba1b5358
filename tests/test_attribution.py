"""Node times to unit shares: module paths name the unit, layout nodes go to the unit that follows them."""

import numpy as np
import pytest

from profiler.attribution import AttributionError, unit_of_node, unit_shares

N = 1 + 2 + 4  # first conv, two blocks, final expand, pool, feature mix, classifier


def test_module_paths_name_their_units():
    assert unit_of_node("/first_conv/conv/Conv_output_0_nchwc", N) == 0
    assert unit_of_node("/blocks.0/conv/depth_conv/act/Relu", N) == 1
    assert unit_of_node("/blocks.1/conv/point_linear/conv/Conv", N) == 2
    assert unit_of_node("/final_expand_layer/conv/Conv", N) == 3
    assert unit_of_node("/ReduceMean", N) == 4
    assert unit_of_node("/feature_mix_layer/conv/Conv", N) == 5
    assert unit_of_node("/Flatten", N) == 6
    assert unit_of_node("/classifier/linear/Gemm", N) == 6
    assert unit_of_node("ReorderInput_token_12", N) is None


def test_hand_computed_shares():
    nodes = [
        ["ReorderInput", "ReorderInput", 1.0],  # layout: counts toward the first conv, which follows it
        ["/first_conv/conv/Conv", "Conv", 9.0],
        ["/blocks.0/conv/Conv", "Conv", 20.0],
        ["/blocks.1/conv/Conv", "Conv", 30.0],
        ["/final_expand_layer/conv/Conv", "Conv", 10.0],
        ["ReorderOutput_token_3", "ReorderOutput", 2.0],  # goes to the pool
        ["/ReduceMean", "ReduceMean", 3.0],
        ["/feature_mix_layer/conv/Conv", "Conv", 15.0],
        ["/Flatten", "Flatten", 1.0],
        ["/classifier/linear/Gemm", "Gemm", 9.0],
    ]
    expected = np.array([10, 20, 30, 10, 5, 15, 10]) / 100
    assert np.allclose(unit_shares(nodes, N), expected)


def test_a_unit_without_nodes_or_an_unknown_module_is_an_error():
    names = ["/first_conv/c", "/blocks.0/c", "/final_expand_layer/c", "/ReduceMean", "/feature_mix_layer/c",
             "/classifier/g"]
    no_second_block = [[name, "Op", 1.0] for name in names]
    with pytest.raises(AttributionError, match=r"units \[2\]"):
        unit_shares(no_second_block, N)
    with pytest.raises(AttributionError, match="belongs to no unit"):
        unit_of_node("/some_head/Conv", N)
    with pytest.raises(AttributionError, match="names block 5"):
        unit_of_node("/blocks.5/conv/Conv", N)


def test_an_inlined_h_swish_belongs_to_the_node_it_follows():
    """Node names and order as ONNX Runtime 1.32's profiler gave them for an int8 (QDQ) subnet here (times made
    round): the input's quantization and a layout transpose go to the first conv that follows them; the h-swish
    pieces without a path (HardSigmoid_N, the inlined function's QuantizeLinear, QLinearMul_N) to the conv they
    follow, not to the next unit."""
    nodes = [
        ["input_QuantizeLinear", "QuantizeLinear", 2.0],
        ["Transpose", "Transpose", 2.0],
        ["/first_conv/conv/Conv_token_1", "QLinearConv", 20.0],
        ["/first_conv/conv/Conv_output_0_DequantizeLinear", "DequantizeLinear", 2.0],
        ["HardSigmoid_142", "HardSigmoid", 2.0],
        ["_inlfunc_HardSwish_HS_X_QuantizeLinear", "QuantizeLinear", 2.0],
        ["QLinearMul_634", "QLinearMul", 2.0],
        ["/blocks.0/conv/depth_conv/conv/Conv_token_5", "QLinearConv", 8.0],
        ["/blocks.1/conv/inverted_bottleneck/conv/Conv_token_12", "QLinearConv", 10.0],
        ["/final_expand_layer/conv/Conv_token_241", "QLinearConv", 4.0],
        ["HardSigmoid_568", "HardSigmoid", 1.0],
        ["_inlfunc_HardSwish_token_18_HS_X_QuantizeLinear", "QuantizeLinear", 1.0],
        ["QLinearMul_739", "QLinearMul", 2.0],
        ["/ReduceMean", "ReduceMean", 2.0],
        ["/feature_mix_layer/conv/Conv_token_245", "QLinearConv", 6.0],
        ["Transpose_token_244", "Transpose", 1.0],  # a layout change: to the classifier, which follows
        ["HardSigmoid_580", "HardSigmoid", 1.0],
        ["/Flatten", "Flatten", 1.0],
        ["/classifier/linear/Gemm", "QGemm", 8.0],
        ["output_DequantizeLinear", "DequantizeLinear", 2.0],  # after the last unit: to it
    ]
    expected = np.array([32, 8, 10, 8, 2, 7, 12]) / 79
    assert np.allclose(unit_shares(nodes, N), expected)
