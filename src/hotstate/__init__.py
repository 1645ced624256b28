"""hotstate: stateful stream processing on Apache Kafka whose state never makes you wait."""
from . import serde, windows
from .app import App, AppState, StoreInfo, TaskInfo
from .config import Config
from .errors import (BrokerUnavailableError, ConfigError, DeserializationError, HotstateError, ProcessingError,
                     PunctuationError,
                     RecordTooLargeError, StateDirError, StoreClosedError, StoreCorruptedError, StoreIOError,
                     TopologyError)
from .handlers import ErrorHandlerContext, ProcessingHandlerResponse
from .observe.listener import RestoreListener, StandbyUpdateListener, SuspendReason
from .processor import Cancellable, Processor, Punctuation
from .records import Record, TopicPartition
from .runtime.task import TaskState
from .state.store import StoreSpec
from .windows import Windowed

__all__ = [
    "App", "AppState", "BrokerUnavailableError", "Cancellable", "Config", "ConfigError", "DeserializationError",
    "ErrorHandlerContext", "HotstateError", "ProcessingError", "ProcessingHandlerResponse", "Processor",
    "Punctuation", "PunctuationError", "Record",
    "RecordTooLargeError", "RestoreListener", "StateDirError", "StoreClosedError", "StoreCorruptedError",
    "StoreInfo", "StoreIOError",
    "StandbyUpdateListener", "StoreSpec", "SuspendReason", "TaskInfo", "TaskState", "TopicPartition",
    "TopologyError", "Windowed", "serde", "windows",
]
__version__ = "0.1.0"
