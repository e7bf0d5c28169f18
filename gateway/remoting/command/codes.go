package command

import "strconv"

// RequestCode is Code in a request (Java RequestCode). The numbers were
// checked against apache/rocketmq develop (2025-09); the "Go" notes say
// whether rocketmq-client-go v2 uses the code (remoting.md §2.1).
type RequestCode int32

// Request codes.
const (
	SendMessage                      RequestCode = 10  // client->broker; Go: every single send, long keys
	PullMessage                      RequestCode = 11  // client->broker
	QueryMessage                     RequestCode = 12  // client->broker; not Go
	QueryBrokerOffset                RequestCode = 13  // admin->broker; not Go
	QueryConsumerOffset              RequestCode = 14  // client->broker
	UpdateConsumerOffset             RequestCode = 15  // client->broker; Go: "oneway", flag 0
	UpdateAndCreateTopic             RequestCode = 17  // admin->broker; Go admin.CreateTopic
	GetAllTopicConfig                RequestCode = 21  // broker->broker, admin; not Go
	GetBrokerRuntimeInfo             RequestCode = 28  // admin->broker; not Go
	SearchOffsetByTimestamp          RequestCode = 29  // client->broker
	GetMaxOffset                     RequestCode = 30  // client->broker
	GetMinOffset                     RequestCode = 31  // client->broker; Go: constant only
	GetEarliestMsgStoretime          RequestCode = 32  // client->broker; not Go
	ViewMessageByID                  RequestCode = 33  // client->broker; not Go
	HeartBeat                        RequestCode = 34  // client->broker
	UnregisterClient                 RequestCode = 35  // client->broker; never sent by Go
	ConsumerSendMsgBack              RequestCode = 36  // client->broker
	EndTransaction                   RequestCode = 37  // client->broker; Go: "oneway", flag 0
	GetConsumerListByGroup           RequestCode = 38  // client->broker
	CheckTransactionState            RequestCode = 39  // broker->client; no reply
	NotifyConsumerIDsChanged         RequestCode = 40  // broker->client; no reply
	LockBatchMQ                      RequestCode = 41  // client->broker
	UnlockBatchMQ                    RequestCode = 42  // client->broker
	CheckClientConfig                RequestCode = 46  // client->broker; Java SQL92 filters
	GetKVConfig                      RequestCode = 101 // client->namesrv; Java
	RegisterBroker                   RequestCode = 103 // broker->namesrv
	UnregisterBroker                 RequestCode = 104 // broker->namesrv
	GetRouteInfoByTopic              RequestCode = 105 // client->namesrv
	GetBrokerClusterInfo             RequestCode = 106 // client->namesrv; not Go
	UpdateAndCreateSubscriptionGroup RequestCode = 200 // admin->broker; not Go
	GetAllSubscriptionGroupConfig    RequestCode = 201 // admin->broker
	GetConsumerConnectionList        RequestCode = 203 // admin->broker; not Go
	GetAllTopicListFromNameServer    RequestCode = 206 // admin->namesrv
	DeleteTopicInBroker              RequestCode = 215 // admin->broker
	DeleteTopicInNamesrv             RequestCode = 216 // admin->namesrv
	ResetConsumerClientOffset        RequestCode = 220 // broker->client; no reply
	GetConsumerStatusFromClient      RequestCode = 221 // broker->client; replies
	GetConsumerRunningInfo           RequestCode = 307 // broker->client; replies
	ConsumeMessageDirectly           RequestCode = 309 // broker->client; replies
	SendMessageV2                    RequestCode = 310 // client->broker; Java, short keys a..n
	SendBatchMessage                 RequestCode = 320 // client->broker; short keys
	QueryDataVersion                 RequestCode = 322 // broker->namesrv
	SendReplyMessage                 RequestCode = 324 // client->broker; request/reply
	SendReplyMessageV2               RequestCode = 325 // client->broker
	PushReplyMessageToClient         RequestCode = 326 // broker->client; no reply
	QueryAssignment                  RequestCode = 400 // Java 5.x client->broker
	SetMessageRequestMode            RequestCode = 401 // Java 5.x client->broker
	PopMessage                       RequestCode = 200050
	AckMessage                       RequestCode = 200051
	PeekMessage                      RequestCode = 200052
	ChangeMessageInvisibleTime       RequestCode = 200053
	Notification                     RequestCode = 200054
	PollingInfo                      RequestCode = 200055
	PopRollback                      RequestCode = 200056
	BatchAckMessage                  RequestCode = 200151
)

// requestCodeNames holds Java's constant names.
var requestCodeNames = map[RequestCode]string{
	SendMessage:                      "SEND_MESSAGE",
	PullMessage:                      "PULL_MESSAGE",
	QueryMessage:                     "QUERY_MESSAGE",
	QueryBrokerOffset:                "QUERY_BROKER_OFFSET",
	QueryConsumerOffset:              "QUERY_CONSUMER_OFFSET",
	UpdateConsumerOffset:             "UPDATE_CONSUMER_OFFSET",
	UpdateAndCreateTopic:             "UPDATE_AND_CREATE_TOPIC",
	GetAllTopicConfig:                "GET_ALL_TOPIC_CONFIG",
	GetBrokerRuntimeInfo:             "GET_BROKER_RUNTIME_INFO",
	SearchOffsetByTimestamp:          "SEARCH_OFFSET_BY_TIMESTAMP",
	GetMaxOffset:                     "GET_MAX_OFFSET",
	GetMinOffset:                     "GET_MIN_OFFSET",
	GetEarliestMsgStoretime:          "GET_EARLIEST_MSG_STORETIME",
	ViewMessageByID:                  "VIEW_MESSAGE_BY_ID",
	HeartBeat:                        "HEART_BEAT",
	UnregisterClient:                 "UNREGISTER_CLIENT",
	ConsumerSendMsgBack:              "CONSUMER_SEND_MSG_BACK",
	EndTransaction:                   "END_TRANSACTION",
	GetConsumerListByGroup:           "GET_CONSUMER_LIST_BY_GROUP",
	CheckTransactionState:            "CHECK_TRANSACTION_STATE",
	NotifyConsumerIDsChanged:         "NOTIFY_CONSUMER_IDS_CHANGED",
	LockBatchMQ:                      "LOCK_BATCH_MQ",
	UnlockBatchMQ:                    "UNLOCK_BATCH_MQ",
	CheckClientConfig:                "CHECK_CLIENT_CONFIG",
	GetKVConfig:                      "GET_KV_CONFIG",
	RegisterBroker:                   "REGISTER_BROKER",
	UnregisterBroker:                 "UNREGISTER_BROKER",
	GetRouteInfoByTopic:              "GET_ROUTEINFO_BY_TOPIC",
	GetBrokerClusterInfo:             "GET_BROKER_CLUSTER_INFO",
	UpdateAndCreateSubscriptionGroup: "UPDATE_AND_CREATE_SUBSCRIPTIONGROUP",
	GetAllSubscriptionGroupConfig:    "GET_ALL_SUBSCRIPTIONGROUP_CONFIG",
	GetConsumerConnectionList:        "GET_CONSUMER_CONNECTION_LIST",
	GetAllTopicListFromNameServer:    "GET_ALL_TOPIC_LIST_FROM_NAMESERVER",
	DeleteTopicInBroker:              "DELETE_TOPIC_IN_BROKER",
	DeleteTopicInNamesrv:             "DELETE_TOPIC_IN_NAMESRV",
	ResetConsumerClientOffset:        "RESET_CONSUMER_CLIENT_OFFSET",
	GetConsumerStatusFromClient:      "GET_CONSUMER_STATUS_FROM_CLIENT",
	GetConsumerRunningInfo:           "GET_CONSUMER_RUNNING_INFO",
	ConsumeMessageDirectly:           "CONSUME_MESSAGE_DIRECTLY",
	SendMessageV2:                    "SEND_MESSAGE_V2",
	SendBatchMessage:                 "SEND_BATCH_MESSAGE",
	QueryDataVersion:                 "QUERY_DATA_VERSION",
	SendReplyMessage:                 "SEND_REPLY_MESSAGE",
	SendReplyMessageV2:               "SEND_REPLY_MESSAGE_V2",
	PushReplyMessageToClient:         "PUSH_REPLY_MESSAGE_TO_CLIENT",
	QueryAssignment:                  "QUERY_ASSIGNMENT",
	SetMessageRequestMode:            "SET_MESSAGE_REQUEST_MODE",
	PopMessage:                       "POP_MESSAGE",
	AckMessage:                       "ACK_MESSAGE",
	PeekMessage:                      "PEEK_MESSAGE",
	ChangeMessageInvisibleTime:       "CHANGE_MESSAGE_INVISIBLETIME",
	Notification:                     "NOTIFICATION",
	PollingInfo:                      "POLLING_INFO",
	PopRollback:                      "POP_ROLLBACK",
	BatchAckMessage:                  "BATCH_ACK_MESSAGE",
}

// String returns Java's name, e.g. "SEND_MESSAGE", or "RequestCode(n)".
func (c RequestCode) String() string {
	if n, ok := requestCodeNames[c]; ok {
		return n
	}
	return "RequestCode(" + strconv.FormatInt(int64(c), 10) + ")"
}

// ResponseCode is Code in a response (Java ResponseCode and
// RemotingSysResponseCode), checked against apache/rocketmq develop. The
// notes say how the Go client reacts (remoting.md §2.2).
type ResponseCode int32

// Response codes.
const (
	Success                    ResponseCode = 0
	SystemError                ResponseCode = 1 // send: retried
	SystemBusy                 ResponseCode = 2 // send: error, not retried
	RequestCodeNotSupported    ResponseCode = 3
	TransactionFailed          ResponseCode = 4
	FlushDiskTimeout           ResponseCode = 10 // send: status, nil error
	SlaveNotAvailable          ResponseCode = 11 // send: status, nil error
	FlushSlaveTimeout          ResponseCode = 12 // send: status, nil error
	MessageIllegal             ResponseCode = 13
	ServiceNotAvailable        ResponseCode = 14 // send: retried
	VersionNotSupported        ResponseCode = 15
	NoPermission               ResponseCode = 16 // send: retried
	TopicNotExist              ResponseCode = 17 // send: retried; route: ErrTopicNotExist
	TopicExistAlready          ResponseCode = 18
	PullNotFound               ResponseCode = 19 // pull: no new message
	PullRetryImmediately       ResponseCode = 20 // pull: no message matched
	PullOffsetMoved            ResponseCode = 21 // pull: offset illegal, 10 s pause
	QueryNotFound              ResponseCode = 22 // QUERY_CONSUMER_OFFSET: no offset
	SubscriptionParseFailed    ResponseCode = 23
	SubscriptionNotExist       ResponseCode = 24
	SubscriptionNotLatest      ResponseCode = 25
	SubscriptionGroupNotExist  ResponseCode = 26
	FilterDataNotExist         ResponseCode = 27
	FilterDataNotLatest        ResponseCode = 28
	InvalidParameter           ResponseCode = 29
	TransactionShouldCommit    ResponseCode = 200
	TransactionShouldRollback  ResponseCode = 201
	TransactionStateUnknow     ResponseCode = 202
	TransactionStateGroupWrong ResponseCode = 203
	NoBuyerID                  ResponseCode = 204
	NotInCurrentUnit           ResponseCode = 205
	ConsumerNotOnline          ResponseCode = 206
	ConsumeMsgTimeout          ResponseCode = 207
	NoMessage                  ResponseCode = 208
	PollingFull                ResponseCode = 209
	PollingTimeout             ResponseCode = 210
	BrokerNotExist             ResponseCode = 211
	BrokerDispatchNotComplete  ResponseCode = 212
	BroadcastConsumption       ResponseCode = 213
	FlowControl                ResponseCode = 215
	NotLeaderForQueue          ResponseCode = 501
	IllegalOperation           ResponseCode = 604 // END_TRANSACTION rejected
	GoAway                     ResponseCode = 1500
	RPCUnknown                 ResponseCode = -1000
	RPCAddrIsNull              ResponseCode = -1002
	RPCSendToChannelFailed     ResponseCode = -1004
	RPCTimeOut                 ResponseCode = -1006
)

var responseCodeNames = map[ResponseCode]string{
	Success:                    "SUCCESS",
	SystemError:                "SYSTEM_ERROR",
	SystemBusy:                 "SYSTEM_BUSY",
	RequestCodeNotSupported:    "REQUEST_CODE_NOT_SUPPORTED",
	TransactionFailed:          "TRANSACTION_FAILED",
	FlushDiskTimeout:           "FLUSH_DISK_TIMEOUT",
	SlaveNotAvailable:          "SLAVE_NOT_AVAILABLE",
	FlushSlaveTimeout:          "FLUSH_SLAVE_TIMEOUT",
	MessageIllegal:             "MESSAGE_ILLEGAL",
	ServiceNotAvailable:        "SERVICE_NOT_AVAILABLE",
	VersionNotSupported:        "VERSION_NOT_SUPPORTED",
	NoPermission:               "NO_PERMISSION",
	TopicNotExist:              "TOPIC_NOT_EXIST",
	TopicExistAlready:          "TOPIC_EXIST_ALREADY",
	PullNotFound:               "PULL_NOT_FOUND",
	PullRetryImmediately:       "PULL_RETRY_IMMEDIATELY",
	PullOffsetMoved:            "PULL_OFFSET_MOVED",
	QueryNotFound:              "QUERY_NOT_FOUND",
	SubscriptionParseFailed:    "SUBSCRIPTION_PARSE_FAILED",
	SubscriptionNotExist:       "SUBSCRIPTION_NOT_EXIST",
	SubscriptionNotLatest:      "SUBSCRIPTION_NOT_LATEST",
	SubscriptionGroupNotExist:  "SUBSCRIPTION_GROUP_NOT_EXIST",
	FilterDataNotExist:         "FILTER_DATA_NOT_EXIST",
	FilterDataNotLatest:        "FILTER_DATA_NOT_LATEST",
	InvalidParameter:           "INVALID_PARAMETER",
	TransactionShouldCommit:    "TRANSACTION_SHOULD_COMMIT",
	TransactionShouldRollback:  "TRANSACTION_SHOULD_ROLLBACK",
	TransactionStateUnknow:     "TRANSACTION_STATE_UNKNOW",
	TransactionStateGroupWrong: "TRANSACTION_STATE_GROUP_WRONG",
	NoBuyerID:                  "NO_BUYER_ID",
	NotInCurrentUnit:           "NOT_IN_CURRENT_UNIT",
	ConsumerNotOnline:          "CONSUMER_NOT_ONLINE",
	ConsumeMsgTimeout:          "CONSUME_MSG_TIMEOUT",
	NoMessage:                  "NO_MESSAGE",
	PollingFull:                "POLLING_FULL",
	PollingTimeout:             "POLLING_TIMEOUT",
	BrokerNotExist:             "BROKER_NOT_EXIST",
	BrokerDispatchNotComplete:  "BROKER_DISPATCH_NOT_COMPLETE",
	BroadcastConsumption:       "BROADCAST_CONSUMPTION",
	FlowControl:                "FLOW_CONTROL",
	NotLeaderForQueue:          "NOT_LEADER_FOR_QUEUE",
	IllegalOperation:           "ILLEGAL_OPERATION",
	GoAway:                     "GO_AWAY",
	RPCUnknown:                 "RPC_UNKNOWN",
	RPCAddrIsNull:              "RPC_ADDR_IS_NULL",
	RPCSendToChannelFailed:     "RPC_SEND_TO_CHANNEL_FAILED",
	RPCTimeOut:                 "RPC_TIME_OUT",
}

// String returns Java's name, e.g. "TOPIC_NOT_EXIST", or "ResponseCode(n)".
func (c ResponseCode) String() string {
	if n, ok := responseCodeNames[c]; ok {
		return n
	}
	return "ResponseCode(" + strconv.FormatInt(int64(c), 10) + ")"
}

// Name names a code for logs: "GET_ROUTEINFO_BY_TOPIC(105)" for a request,
// "TOPIC_NOT_EXIST(17)" for a response, "CODE(12345)" when unknown. Request
// and response numbers overlap (17 is UPDATE_AND_CREATE_TOPIC and
// TOPIC_NOT_EXIST), hence response.
func Name(code int32, response bool) string {
	var (
		n  string
		ok bool
	)
	if response {
		n, ok = responseCodeNames[ResponseCode(code)]
	} else {
		n, ok = requestCodeNames[RequestCode(code)]
	}
	if !ok {
		n = "CODE"
	}
	return n + "(" + strconv.FormatInt(int64(code), 10) + ")"
}
