"""OPC 40100-1 (OPC UA for Machine Vision, v1.0.0) as data: the browse names and numeric node ids
of what afrd's Basic Vision System Server Facet serves, from the specification's tables and its
NodeIds.csv. ``opcua_mv_types`` builds the nodes from these tables; ``opcua_mv`` the instance.

Only what afrd implements is listed: every mandatory declaration of the types it serves and the
optional ones it fills (the README has the conformance units, done or not). Node ids are those
of the type definitions (namespace ``MV_URI``); an instance's nodes are afrd's own.
"""

from __future__ import annotations

MV_URI = "http://opcfoundation.org/UA/MachineVision"

# ns0 ids used below
BOOL, INT32, UINT32, UINT16, STRING, BYTES, LTEXT = 1, 6, 7, 5, 12, 15, 21
UTCTIME, DURATION, VARIANT, STRUCTURE, ENUMERATION, ARGUMENT = 294, 290, 24, 22, 29, 296

SIMPLE = {
    "TrimmedString": (3017, STRING),
    "Handle": (3018, UINT32),
    "ResultStateDataType": (3009, INT32),
}
ENUMS = {
    "SystemStateDataType": (3023, ["PRD_1", "SBY_2", "ENG_3", "SDT_4", "UDT_5", "NST_6"], 1),
    "TriStateBooleanDataType": (3014, ["FALSE_0", "TRUE_1", "DONTCARE_2"], 0),
}
_BINARY_ID = [
    ("Id", "TrimmedString", False),
    ("Version", "TrimmedString", True),
    ("Hash", BYTES, True),
    ("HashAlgorithm", STRING, True),
    ("Description", LTEXT, True),
]
_ID_DESC = [("Id", "TrimmedString", False), ("Description", LTEXT, True)]
# name -> (data type id, Default Binary encoding id, supertype (None: Structure), fields);
# a field is (name, type, optional[, "array"]); supertypes first
STRUCTS: dict[str, tuple[int, int, str | None, list[tuple]]] = {
    "BinaryIdBaseDataType": (3019, 5027, None, _BINARY_ID),
    "RecipeIdExternalDataType": (3002, 5002, "BinaryIdBaseDataType", _BINARY_ID),
    "RecipeIdInternalDataType": (3013, 5268, "BinaryIdBaseDataType", _BINARY_ID),
    "ConfigurationIdDataType": (3008, 5090, "BinaryIdBaseDataType", _BINARY_ID),
    "ProductIdDataType": (3003, 5224, None, _ID_DESC),
    "MeasIdDataType": (3015, 5006, None, _ID_DESC),
    "PartIdDataType": (3004, 5013, None, _ID_DESC),
    "JobIdDataType": (3016, 5008, None, [("Id", "TrimmedString", False)]),
    "ResultIdDataType": (3021, 5274, None, [("Id", "TrimmedString", False)]),
    "ProcessingTimesDataType": (
        3005,
        5016,
        None,
        [
            ("StartTime", UTCTIME, False),
            ("EndTime", UTCTIME, False),
            ("AcquisitionDuration", DURATION, True),
            ("ProcessingDuration", DURATION, True),
        ],
    ),
    "ResultDataType": (
        3006,
        5018,
        None,
        [
            ("ResultId", "ResultIdDataType", False),
            ("HasTransferableDataOnFile", BOOL, True),
            ("IsPartial", BOOL, False),
            ("IsSimulated", BOOL, True),
            ("ResultState", "ResultStateDataType", False),
            ("MeasId", "MeasIdDataType", True),
            ("PartId", "PartIdDataType", True),
            ("ExternalRecipeId", "RecipeIdExternalDataType", True),
            ("InternalRecipeId", "RecipeIdInternalDataType", False),
            ("ProductId", "ProductIdDataType", True),
            ("ExternalConfigurationId", "ConfigurationIdDataType", True),
            ("InternalConfigurationId", "ConfigurationIdDataType", False),
            ("JobId", "JobIdDataType", False),
            ("CreationTime", UTCTIME, False),
            ("ProcessingTimes", "ProcessingTimesDataType", True),
            ("ResultContent", VARIANT, True, "array"),
        ],
    ),
    "ConfigurationDataType": (
        3007,
        5088,
        None,
        [
            ("HasTransferableDataOnFile", BOOL, True),
            ("ExternalId", "ConfigurationIdDataType", True),
            ("InternalId", "ConfigurationIdDataType", False),
            ("LastModified", UTCTIME, False),
        ],
    ),
    "SystemStateDescriptionDataType": (
        3024,
        5278,
        None,
        [("State", "SystemStateDataType", False), ("StateDescription", "TrimmedString", True)],
    ),
}

# object types: name -> (id, ns0 supertype)
OBJECT_TYPES = {
    "VisionSystemType": (1003, 58),
    "VisionStateMachineType": (1017, 2771),
    "VisionAutomaticModeStateMachineType": (1021, 2771),
    "RecipeManagementType": (1004, 58),
    "ResultManagementType": (1007, 58),
    "ConfigurationManagementType": (1006, 58),
    "ResultReadyEventType": (1024, 2041),
}
# states: name -> (machine type, state node id, StateNumber, StateNumber property id)
STATES = {
    "Preoperational": ("VisionStateMachineType", 5028, 1, 6226),
    "Halted": ("VisionStateMachineType", 5029, 2, 6227),
    "Error": ("VisionStateMachineType", 5030, 3, 6228),
    "Operational": ("VisionStateMachineType", 5031, 4, 6229),
    "Initialized": ("VisionAutomaticModeStateMachineType", 5056, 5, 6259),
    "Ready": ("VisionAutomaticModeStateMachineType", 5057, 6, 6260),
    "SingleExecution": ("VisionAutomaticModeStateMachineType", 5058, 7, 6261),
    "ContinuousExecution": ("VisionAutomaticModeStateMachineType", 5059, 8, 6262),
}
# transitions: name -> (node id, TransitionNumber, its property id, cause method or None; a
# cause afrd does not declare gets no HasCause reference);
# the name says from and to ("<From>To<To>[Auto|Stop|...]"), _ends() reads it
TRANSITIONS = {
    "PreoperationalToHalted": (5032, 121, 6230, "Halt"),
    "PreoperationalToHaltedAuto": (5033, 120, 6231, None),
    "PreoperationalToErrorAuto": (5034, 130, 6232, None),
    "PreoperationalToOperational": (5253, 141, 6171, "SelectModeAutomatic"),
    "PreoperationalToOperationalAuto": (5254, 140, 6221, None),
    "PreoperationalToInitialized": (5035, 151, 6233, "SelectModeAutomatic"),
    "PreoperationalToInitializedAuto": (5036, 150, 6234, None),
    "HaltedToPreoperational": (5037, 211, 6235, "Reset"),
    "HaltedToPreoperationalAuto": (5038, 210, 6236, None),
    "ErrorToPreoperational": (5039, 311, 6237, "Reset"),
    "ErrorToPreoperationalAuto": (5040, 310, 6238, None),
    "ErrorToHalted": (5041, 321, 6239, "Halt"),
    "ErrorToHaltedAuto": (5042, 320, 6240, None),
    "ErrorToOperationalAuto": (5255, 340, 6341, None),
    "OperationalToPreoperational": (5047, 411, 6245, "Reset"),
    "OperationalToPreoperationalAuto": (5048, 410, 6246, None),
    "OperationalToHalted": (5049, 421, 6247, "Halt"),
    "OperationalToHaltedAuto": (5050, 420, 6248, None),
    "OperationalToErrorAuto": (5051, 430, 6249, None),
    "InitializedToReadyRecipe": (5060, 561, 6263, "PrepareRecipe"),
    "InitializedToReadyProduct": (5045, 562, 6084, "PrepareProduct"),
    "InitializedToReadyAuto": (5061, 560, 6264, None),
    "ReadyToInitializedRecipe": (5062, 651, 6265, "UnprepareRecipe"),
    "ReadyToInitializedProduct": (5044, 652, 6243, "UnprepareProduct"),
    "ReadyToInitializedAuto": (5063, 650, 6266, None),
    "ReadyToSingleExecution": (5064, 671, 6267, "StartSingleJob"),
    "ReadyToSingleExecutionAuto": (5065, 670, 6268, None),
    "ReadyToContinuousExecution": (5066, 681, 6269, "StartContinuous"),
    "ReadyToContinuousExecutionAuto": (5067, 680, 6270, None),
    "SingleExecutionToReadyStop": (5068, 761, 6271, "Stop"),
    "SingleExecutionToReadyAbort": (5069, 762, 6272, "Abort"),
    "SingleExecutionToReadyAuto": (5070, 760, 6273, None),
    "ContinuousExecutionToReadyStop": (5071, 861, 6274, "Stop"),
    "ContinuousExecutionToReadyAbort": (5072, 862, 6275, "Abort"),
    "ContinuousExecutionToReadyAuto": (5073, 860, 6276, None),
}

_CAUSE = [("Cause", INT32), ("CauseDescription", STRING)]
_ERR = [("Error", INT32)]
_START = [
    ("MeasId", "MeasIdDataType"),
    ("PartId", "PartIdDataType"),
    ("RecipeId", "RecipeIdExternalDataType"),
    ("ProductId", "ProductIdDataType"),
    ("Parameters", VARIANT, 1),
]
_COMPONENTS = [
    ("HasTransferableDataOnFile", BOOL),
    ("ResultHandle", "Handle"),
    ("IsPartial", BOOL),
    ("IsSimulated", BOOL),
    ("ResultState", "ResultStateDataType"),
    ("MeasId", "MeasIdDataType"),
    ("PartId", "PartIdDataType"),
    ("ExternalRecipeId", "RecipeIdExternalDataType"),
    ("InternalRecipeId", "RecipeIdInternalDataType"),
    ("ProductId", "ProductIdDataType"),
    ("ExternalConfigurationId", "ConfigurationIdDataType"),
    ("InternalConfigurationId", "ConfigurationIdDataType"),
    ("JobId", "JobIdDataType"),
    ("CreationTime", UTCTIME),
    ("ProcessingTimes", "ProcessingTimesDataType"),
    ("ResultContent", VARIANT, 1),
]
_RESULT_FILTER = [
    ("ResultState", "ResultStateDataType"),
    ("MeasId", "MeasIdDataType"),
    ("PartId", "PartIdDataType"),
    ("ExternalRecipeId", "RecipeIdExternalDataType"),
    ("InternalRecipeId", "RecipeIdInternalDataType"),
    ("ExternalConfigurationId", "ConfigurationIdDataType"),
    ("InternalConfigurationId", "ConfigurationIdDataType"),
    ("ProductId", "ProductIdDataType"),
    ("JobId", "JobIdDataType"),
    ("MaxResults", UINT32),
    ("StartIndex", UINT32),
    ("Timeout", INT32),
]
_LIST_OUT = [("IsComplete", BOOL), ("ResultCount", UINT32)]
_RECIPE_IDS = [
    ("ExternalId", "RecipeIdExternalDataType"),
    ("InternalIdIn", "RecipeIdInternalDataType"),
]
# methods: name -> (declaring type, id, InputArguments id, OutputArguments id, mandatory, in, out)
# an argument is (name, type[, value rank 1 for an array])
METHODS: dict[str, tuple[str, int, int | None, int, bool, list, list]] = {
    "Halt": ("VisionStateMachineType", 7094, 6254, 6255, True, _CAUSE, _ERR),
    "Reset": ("VisionStateMachineType", 7093, 6256, 6257, True, _CAUSE, _ERR),
    "SelectModeAutomatic": ("VisionStateMachineType", 7095, None, 6258, False, [], _ERR),
    "StartSingleJob": (
        "VisionAutomaticModeStateMachineType",
        7098,
        6281,
        6282,
        True,
        _START,
        [("JobId", "JobIdDataType"), *_ERR],
    ),
    "StartContinuous": (
        "VisionAutomaticModeStateMachineType",
        7009,
        6086,
        6087,
        True,
        _START,
        [("JobId", "JobIdDataType"), *_ERR],
    ),
    "Stop": ("VisionAutomaticModeStateMachineType", 7096, 6287, 6288, True, _CAUSE, _ERR),
    "Abort": ("VisionAutomaticModeStateMachineType", 7097, 6285, 6286, True, _CAUSE, _ERR),
    "GetRecipeListFiltered": (
        "RecipeManagementType",
        7014,
        6156,
        6157,
        True,
        [
            ("ExternalId", "RecipeIdExternalDataType"),
            ("ProductId", "ProductIdDataType"),
            ("IsPrepared", "TriStateBooleanDataType"),
            ("MaxResults", UINT32),
            ("StartIndex", UINT32),
            ("Timeout", INT32),
        ],
        [
            *_LIST_OUT,
            ("RecipeHandle", "Handle"),
            ("RecipeList", "RecipeIdInternalDataType", 1),
            *_ERR,
        ],
    ),
    "PrepareRecipe": (
        "RecipeManagementType",
        7015,
        6148,
        6149,
        True,
        _RECIPE_IDS,
        [("InternalIdOut", "RecipeIdInternalDataType"), ("IsCompleted", BOOL), *_ERR],
    ),
    "UnprepareRecipe": (
        "RecipeManagementType",
        7055,
        6152,
        6153,
        True,
        _RECIPE_IDS,
        [("InternalIdOut", "RecipeIdInternalDataType"), *_ERR],
    ),
    "GetResultById": (
        "ResultManagementType",
        7026,
        6209,
        6210,
        True,
        [("ResultId", "ResultIdDataType"), ("Timeout", INT32)],
        [("ResultHandle", "Handle"), ("Result", "ResultDataType"), *_ERR],
    ),
    "GetResultComponentsById": (
        "ResultManagementType",
        7007,
        6024,
        6025,
        True,
        [("ResultId", "ResultIdDataType"), ("Timeout", INT32)],
        [*_COMPONENTS, *_ERR],
    ),
    "GetResultListFiltered": (
        "ResultManagementType",
        7089,
        6213,
        6214,
        True,
        _RESULT_FILTER,
        [*_LIST_OUT, ("ResultHandle", "Handle"), ("ResultList", "ResultDataType", 1), *_ERR],
    ),
    "ActivateConfiguration": (
        "ConfigurationManagementType",
        7048,
        6116,
        6117,
        True,
        [("InternalId", "ConfigurationIdDataType")],
        _ERR,
    ),
    "GetConfigurationById": (
        "ConfigurationManagementType",
        7041,
        6100,
        6101,
        True,
        [("InternalId", "ConfigurationIdDataType"), ("Timeout", INT32)],
        [("ConfigurationHandle", "Handle"), ("Configuration", "ConfigurationDataType"), *_ERR],
    ),
    "GetConfigurationList": (
        "ConfigurationManagementType",
        7045,
        6104,
        6105,
        True,
        [("MaxResults", UINT32), ("StartIndex", UINT32), ("Timeout", INT32)],
        [
            *_LIST_OUT,
            ("ConfigurationHandle", "Handle"),
            ("ConfigurationList", "ConfigurationDataType", 1),
            *_ERR,
        ],
    ),
}
# other instance declarations: (declaring type, browse name, id, mandatory, kind, type)
COMPONENTS = [
    ("VisionSystemType", "VisionStateMachine", 5053, True, "object", "VisionStateMachineType"),
    ("VisionSystemType", "RecipeManagement", 5015, False, "object", "RecipeManagementType"),
    ("VisionSystemType", "ResultManagement", 5020, False, "object", "ResultManagementType"),
    (
        "VisionSystemType",
        "ConfigurationManagement",
        5004,
        False,
        "object",
        "ConfigurationManagementType",
    ),
    ("VisionSystemType", "DiagnosticLevel", 6048, False, "variable", UINT16),
    ("VisionSystemType", "SystemState", 6049, False, "variable", "SystemStateDescriptionDataType"),
    (
        "VisionStateMachineType",
        "AutomaticModeStateMachine",
        5024,
        False,
        "object",
        "VisionAutomaticModeStateMachineType",
    ),
    (
        "ConfigurationManagementType",
        "ActiveConfiguration",
        6132,
        True,
        "variable",
        "ConfigurationDataType",
    ),
]
# ResultReadyEventType's properties that afrd fills: name -> (id, mandatory, type)
EVENT_FIELDS = {
    "ResultId": (6295, True, "ResultIdDataType"),
    "IsPartial": (6296, True, BOOL),
    "ResultState": (6298, True, "ResultStateDataType"),
    "MeasId": (6299, False, "MeasIdDataType"),
    "JobId": (6300, True, "JobIdDataType"),
    "ExternalRecipeId": (6301, False, "RecipeIdExternalDataType"),
    "InternalRecipeId": (6302, True, "RecipeIdInternalDataType"),
    "CreationTime": (6303, True, UTCTIME),
    "PartId": (6304, False, "PartIdDataType"),
    "ProcessingTimes": (6305, False, "ProcessingTimesDataType"),
    "ResultContent": (6306, False, VARIANT),
    "InternalConfigurationId": (6142, True, "ConfigurationIdDataType"),
    "ProductId": (6143, False, "ProductIdDataType"),
}


def transition_ends(name: str) -> tuple[str, str]:
    """The states a transition leaves and enters: ``"SingleExecutionToReadyStop"`` ->
    ("SingleExecution", "Ready")."""
    src, rest = name.split("To", 1)
    dst = next(s for s in sorted(STATES, key=len, reverse=True) if rest.startswith(s))
    return src, dst
