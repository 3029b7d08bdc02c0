"""The part of Caffe's ``caffe.proto`` needed to read AlexNet, declared at run time.

Caffe stores networks as protocol buffers: ``.caffemodel`` files are binary
``NetParameter`` messages, ``.prototxt`` files the same message in protobuf's text
format.  No ``protoc`` is needed to read them: this module describes the messages
with :mod:`google.protobuf.descriptor_pb2` (field names, numbers, types and defaults
as in BVLC Caffe's ``src/caffe/proto/caffe.proto``), adds the description to a
private descriptor pool and asks :mod:`google.protobuf.message_factory` for the
message classes.

Declared are the network containers (``NetParameter``, the new ``LayerParameter``
and the old ``V1LayerParameter`` that BVLC AlexNet's 2014 caffemodel uses), blobs,
phase rules, and the parameter messages of the layer types that AlexNet's deploy and
train definitions contain.  Binary files may hold further fields: protobuf keeps them
as unknown fields and they are never looked at.  Text files must only use declared
fields, so a misspelt or unsupported parameter is reported instead of ignored.

Examples
--------
>>> net = NetParameter()
>>> layer = net.layer.add(name="conv1", type="Convolution")
>>> layer.convolution_param.group
1
>>> V1_LAYER_TYPES[V1LayerParameter.CONVOLUTION]
'Convolution'
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "int32": _F.TYPE_INT32,
    "uint32": _F.TYPE_UINT32,
    "int64": _F.TYPE_INT64,
}

PACKAGE = "caffe"

# Enums: name -> [(value name, number)].  Nested enums are named "Message.Enum".
_ENUMS = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "ParamSpec.DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)],
    "FillerParameter.VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)],
    "ConvolutionParameter.Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "LRNParameter.NormRegion": [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)],
    "LRNParameter.Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "PoolingParameter.PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "PoolingParameter.Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "PoolingParameter.RoundMode": [("CEIL", 0), ("FLOOR", 1)],
    "ReLUParameter.Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "SoftmaxParameter.Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
    "DataParameter.DB": [("LEVELDB", 0), ("LMDB", 1)],
    "LossParameter.NormalizationMode": [("FULL", 0), ("VALID", 1), ("BATCH_SIZE", 2),
                                        ("NONE", 3)],
    "V1LayerParameter.LayerType": [
        ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2),
        ("CONCAT", 3), ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5),
        ("DECONVOLUTION", 39), ("DROPOUT", 6), ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7),
        ("ELTWISE", 25), ("EXP", 38), ("FLATTEN", 8), ("HDF5_DATA", 9), ("HDF5_OUTPUT", 10),
        ("HINGE_LOSS", 28), ("IM2COL", 11), ("IMAGE_DATA", 12), ("INFOGAIN_LOSS", 13),
        ("INNER_PRODUCT", 14), ("LRN", 15), ("MEMORY_DATA", 29),
        ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34), ("POOLING", 17), ("POWER", 26),
        ("RELU", 18), ("SIGMOID", 19), ("SIGMOID_CROSS_ENTROPY_LOSS", 27), ("SILENCE", 36),
        ("SOFTMAX", 20), ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33), ("TANH", 23),
        ("WINDOW_DATA", 24), ("THRESHOLD", 31),
    ],
    "V1LayerParameter.DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)],
}

# Messages: name -> [(field, number, label, type, default or None, packed)].
# A type that is not a scalar names a message or an enum of this file.
_O, _R = _OPTIONAL, _REPEATED
_MESSAGES = {
    "BlobShape": [
        ("dim", 1, _R, "int64", None, True),
    ],
    "BlobProto": [
        ("shape", 7, _O, "BlobShape", None, False),
        ("data", 5, _R, "float", None, True),
        ("diff", 6, _R, "float", None, True),
        ("double_data", 8, _R, "double", None, True),
        ("double_diff", 9, _R, "double", None, True),
        ("num", 1, _O, "int32", "0", False),
        ("channels", 2, _O, "int32", "0", False),
        ("height", 3, _O, "int32", "0", False),
        ("width", 4, _O, "int32", "0", False),
    ],
    "NetParameter": [
        ("name", 1, _O, "string", None, False),
        ("input", 3, _R, "string", None, False),
        ("input_shape", 8, _R, "BlobShape", None, False),
        ("input_dim", 4, _R, "int32", None, False),
        ("force_backward", 5, _O, "bool", "false", False),
        ("state", 6, _O, "NetState", None, False),
        ("debug_info", 7, _O, "bool", "false", False),
        ("layer", 100, _R, "LayerParameter", None, False),
        ("layers", 2, _R, "V1LayerParameter", None, False),
    ],
    "NetState": [
        ("phase", 1, _O, "Phase", "TEST", False),
        ("level", 2, _O, "int32", "0", False),
        ("stage", 3, _R, "string", None, False),
    ],
    "NetStateRule": [
        ("phase", 1, _O, "Phase", None, False),
        ("min_level", 2, _O, "int32", None, False),
        ("max_level", 3, _O, "int32", None, False),
        ("stage", 4, _R, "string", None, False),
        ("not_stage", 5, _R, "string", None, False),
    ],
    "ParamSpec": [
        ("name", 1, _O, "string", None, False),
        ("share_mode", 2, _O, "ParamSpec.DimCheckMode", None, False),
        ("lr_mult", 3, _O, "float", "1", False),
        ("decay_mult", 4, _O, "float", "1", False),
    ],
    "LayerParameter": [
        ("name", 1, _O, "string", None, False),
        ("type", 2, _O, "string", None, False),
        ("bottom", 3, _R, "string", None, False),
        ("top", 4, _R, "string", None, False),
        ("phase", 10, _O, "Phase", None, False),
        ("loss_weight", 5, _R, "float", None, False),
        ("param", 6, _R, "ParamSpec", None, False),
        ("blobs", 7, _R, "BlobProto", None, False),
        ("propagate_down", 11, _R, "bool", None, False),
        ("include", 8, _R, "NetStateRule", None, False),
        ("exclude", 9, _R, "NetStateRule", None, False),
        ("transform_param", 100, _O, "TransformationParameter", None, False),
        ("loss_param", 101, _O, "LossParameter", None, False),
        ("accuracy_param", 102, _O, "AccuracyParameter", None, False),
        ("convolution_param", 106, _O, "ConvolutionParameter", None, False),
        ("data_param", 107, _O, "DataParameter", None, False),
        ("dropout_param", 108, _O, "DropoutParameter", None, False),
        ("inner_product_param", 117, _O, "InnerProductParameter", None, False),
        ("lrn_param", 118, _O, "LRNParameter", None, False),
        ("pooling_param", 121, _O, "PoolingParameter", None, False),
        ("relu_param", 123, _O, "ReLUParameter", None, False),
        ("softmax_param", 125, _O, "SoftmaxParameter", None, False),
        ("input_param", 143, _O, "InputParameter", None, False),
    ],
    "V1LayerParameter": [
        ("bottom", 2, _R, "string", None, False),
        ("top", 3, _R, "string", None, False),
        ("name", 4, _O, "string", None, False),
        ("include", 32, _R, "NetStateRule", None, False),
        ("exclude", 33, _R, "NetStateRule", None, False),
        ("type", 5, _O, "V1LayerParameter.LayerType", None, False),
        ("blobs", 6, _R, "BlobProto", None, False),
        ("param", 1001, _R, "string", None, False),
        ("blob_share_mode", 1002, _R, "V1LayerParameter.DimCheckMode", None, False),
        ("blobs_lr", 7, _R, "float", None, False),
        ("weight_decay", 8, _R, "float", None, False),
        ("loss_weight", 35, _R, "float", None, False),
        ("accuracy_param", 27, _O, "AccuracyParameter", None, False),
        ("convolution_param", 10, _O, "ConvolutionParameter", None, False),
        ("data_param", 11, _O, "DataParameter", None, False),
        ("dropout_param", 12, _O, "DropoutParameter", None, False),
        ("inner_product_param", 17, _O, "InnerProductParameter", None, False),
        ("lrn_param", 18, _O, "LRNParameter", None, False),
        ("pooling_param", 19, _O, "PoolingParameter", None, False),
        ("relu_param", 30, _O, "ReLUParameter", None, False),
        ("softmax_param", 39, _O, "SoftmaxParameter", None, False),
        ("transform_param", 36, _O, "TransformationParameter", None, False),
        ("loss_param", 42, _O, "LossParameter", None, False),
    ],
    "FillerParameter": [
        ("type", 1, _O, "string", "constant", False),
        ("value", 2, _O, "float", "0", False),
        ("min", 3, _O, "float", "0", False),
        ("max", 4, _O, "float", "1", False),
        ("mean", 5, _O, "float", "0", False),
        ("std", 6, _O, "float", "1", False),
        ("sparse", 7, _O, "int32", "-1", False),
        ("variance_norm", 8, _O, "FillerParameter.VarianceNorm", "FAN_IN", False),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, _O, "uint32", None, False),
        ("bias_term", 2, _O, "bool", "true", False),
        ("pad", 3, _R, "uint32", None, False),
        ("kernel_size", 4, _R, "uint32", None, False),
        ("stride", 6, _R, "uint32", None, False),
        ("dilation", 18, _R, "uint32", None, False),
        ("pad_h", 9, _O, "uint32", "0", False),
        ("pad_w", 10, _O, "uint32", "0", False),
        ("kernel_h", 11, _O, "uint32", None, False),
        ("kernel_w", 12, _O, "uint32", None, False),
        ("stride_h", 13, _O, "uint32", None, False),
        ("stride_w", 14, _O, "uint32", None, False),
        ("group", 5, _O, "uint32", "1", False),
        ("weight_filler", 7, _O, "FillerParameter", None, False),
        ("bias_filler", 8, _O, "FillerParameter", None, False),
        ("engine", 15, _O, "ConvolutionParameter.Engine", "DEFAULT", False),
        ("axis", 16, _O, "int32", "1", False),
        ("force_nd_im2col", 17, _O, "bool", "false", False),
    ],
    "LRNParameter": [
        ("local_size", 1, _O, "uint32", "5", False),
        ("alpha", 2, _O, "float", "1", False),
        ("beta", 3, _O, "float", "0.75", False),
        ("norm_region", 4, _O, "LRNParameter.NormRegion", "ACROSS_CHANNELS", False),
        ("k", 5, _O, "float", "1", False),
        ("engine", 6, _O, "LRNParameter.Engine", "DEFAULT", False),
    ],
    "PoolingParameter": [
        ("pool", 1, _O, "PoolingParameter.PoolMethod", "MAX", False),
        ("pad", 4, _O, "uint32", "0", False),
        ("pad_h", 9, _O, "uint32", "0", False),
        ("pad_w", 10, _O, "uint32", "0", False),
        ("kernel_size", 2, _O, "uint32", None, False),
        ("kernel_h", 5, _O, "uint32", None, False),
        ("kernel_w", 6, _O, "uint32", None, False),
        ("stride", 3, _O, "uint32", "1", False),
        ("stride_h", 7, _O, "uint32", None, False),
        ("stride_w", 8, _O, "uint32", None, False),
        ("engine", 11, _O, "PoolingParameter.Engine", "DEFAULT", False),
        ("global_pooling", 12, _O, "bool", "false", False),
        ("round_mode", 13, _O, "PoolingParameter.RoundMode", "CEIL", False),
    ],
    "InnerProductParameter": [
        ("num_output", 1, _O, "uint32", None, False),
        ("bias_term", 2, _O, "bool", "true", False),
        ("weight_filler", 3, _O, "FillerParameter", None, False),
        ("bias_filler", 4, _O, "FillerParameter", None, False),
        ("axis", 5, _O, "int32", "1", False),
        ("transpose", 6, _O, "bool", "false", False),
    ],
    "ReLUParameter": [
        ("negative_slope", 1, _O, "float", "0", False),
        ("engine", 2, _O, "ReLUParameter.Engine", "DEFAULT", False),
    ],
    "DropoutParameter": [
        ("dropout_ratio", 1, _O, "float", "0.5", False),
    ],
    "SoftmaxParameter": [
        ("engine", 1, _O, "SoftmaxParameter.Engine", "DEFAULT", False),
        ("axis", 2, _O, "int32", "1", False),
    ],
    "InputParameter": [
        ("shape", 1, _R, "BlobShape", None, False),
    ],
    "TransformationParameter": [
        ("scale", 1, _O, "float", "1", False),
        ("mirror", 2, _O, "bool", "false", False),
        ("crop_size", 3, _O, "uint32", "0", False),
        ("mean_file", 4, _O, "string", None, False),
        ("mean_value", 5, _R, "float", None, False),
        ("force_color", 6, _O, "bool", "false", False),
        ("force_gray", 7, _O, "bool", "false", False),
    ],
    "DataParameter": [
        ("source", 1, _O, "string", None, False),
        ("batch_size", 4, _O, "uint32", None, False),
        ("rand_skip", 7, _O, "uint32", "0", False),
        ("backend", 8, _O, "DataParameter.DB", "LEVELDB", False),
        ("scale", 2, _O, "float", "1", False),
        ("mean_file", 3, _O, "string", None, False),
        ("crop_size", 5, _O, "uint32", "0", False),
        ("mirror", 6, _O, "bool", "false", False),
        ("force_encoded_color", 9, _O, "bool", "false", False),
        ("prefetch", 10, _O, "uint32", "4", False),
    ],
    "AccuracyParameter": [
        ("top_k", 1, _O, "uint32", "1", False),
        ("axis", 2, _O, "int32", "1", False),
        ("ignore_label", 3, _O, "int32", None, False),
    ],
    "LossParameter": [
        ("ignore_label", 1, _O, "int32", None, False),
        ("normalization", 3, _O, "LossParameter.NormalizationMode", "VALID", False),
        ("normalize", 2, _O, "bool", None, False),
    ],
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """Describe the declared messages and enums as one ``caffe.proto`` file."""
    proto = descriptor_pb2.FileDescriptorProto(name="caffe.proto", package=PACKAGE,
                                               syntax="proto2")
    messages = {}
    for name in _MESSAGES:
        messages[name] = proto.message_type.add(name=name)
    for full_name, values in _ENUMS.items():
        owner, _, enum_name = full_name.rpartition(".")
        container = messages[owner].enum_type if owner else proto.enum_type
        enum = container.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for name, fields in _MESSAGES.items():
        for field_name, number, label, type_, default, packed in fields:
            field = messages[name].field.add(name=field_name, number=number, label=label)
            if type_ in _SCALARS:
                field.type = _SCALARS[type_]
            elif type_ in _ENUMS:
                field.type = _F.TYPE_ENUM
                field.type_name = f".{PACKAGE}.{type_}"
            elif type_ in _MESSAGES:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{type_}"
            else:  # pragma: no cover - a mistake in the tables above
                raise ValueError(f"{name}.{field_name}: unknown type {type_!r}")
            if default is not None:
                field.default_value = default
            if packed:
                field.options.packed = True
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = _message_class("NetParameter")
LayerParameter = _message_class("LayerParameter")
V1LayerParameter = _message_class("V1LayerParameter")
BlobProto = _message_class("BlobProto")
BlobShape = _message_class("BlobShape")

#: Phase enum values (``caffe.Phase``).
TRAIN, TEST = 0, 1

#: V1 layer type numbers -> the type strings of the new format, as Caffe's own
#: upgrade (``UpgradeV1LayerType``) names them.
V1_LAYER_TYPES = {
    0: "",
    35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat",
    37: "ContrastiveLoss", 4: "Convolution", 5: "Data", 39: "Deconvolution",
    6: "Dropout", 32: "DummyData", 7: "EuclideanLoss", 25: "Eltwise", 38: "Exp",
    8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    29: "MemoryData", 16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling",
    26: "Power", 18: "ReLU", 19: "Sigmoid", 27: "SigmoidCrossEntropyLoss",
    36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 33: "Slice",
    23: "TanH", 24: "WindowData", 31: "Threshold",
}
