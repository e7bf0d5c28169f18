package command

import "testing"

// specRequestCodes and specResponseCodes are the tables of remoting.md §2
// (numbers and Java names), pinned here so the code table cannot drift.
var specRequestCodes = map[int32]string{
	10: "SEND_MESSAGE", 310: "SEND_MESSAGE_V2", 320: "SEND_BATCH_MESSAGE",
	324: "SEND_REPLY_MESSAGE", 325: "SEND_REPLY_MESSAGE_V2", 11: "PULL_MESSAGE",
	34: "HEART_BEAT", 35: "UNREGISTER_CLIENT", 38: "GET_CONSUMER_LIST_BY_GROUP",
	14: "QUERY_CONSUMER_OFFSET", 15: "UPDATE_CONSUMER_OFFSET", 30: "GET_MAX_OFFSET",
	31: "GET_MIN_OFFSET", 29: "SEARCH_OFFSET_BY_TIMESTAMP", 36: "CONSUMER_SEND_MSG_BACK",
	37: "END_TRANSACTION", 39: "CHECK_TRANSACTION_STATE", 40: "NOTIFY_CONSUMER_IDS_CHANGED",
	41: "LOCK_BATCH_MQ", 42: "UNLOCK_BATCH_MQ", 12: "QUERY_MESSAGE", 33: "VIEW_MESSAGE_BY_ID",
	17: "UPDATE_AND_CREATE_TOPIC", 215: "DELETE_TOPIC_IN_BROKER", 201: "GET_ALL_SUBSCRIPTIONGROUP_CONFIG",
	105: "GET_ROUTEINFO_BY_TOPIC", 106: "GET_BROKER_CLUSTER_INFO", 206: "GET_ALL_TOPIC_LIST_FROM_NAMESERVER",
	216: "DELETE_TOPIC_IN_NAMESRV", 103: "REGISTER_BROKER", 104: "UNREGISTER_BROKER",
	220: "RESET_CONSUMER_CLIENT_OFFSET", 221: "GET_CONSUMER_STATUS_FROM_CLIENT",
	307: "GET_CONSUMER_RUNNING_INFO", 309: "CONSUME_MESSAGE_DIRECTLY", 326: "PUSH_REPLY_MESSAGE_TO_CLIENT",
}

var specResponseCodes = map[int32]string{
	0: "SUCCESS", 1: "SYSTEM_ERROR", 2: "SYSTEM_BUSY", 3: "REQUEST_CODE_NOT_SUPPORTED",
	4: "TRANSACTION_FAILED", 10: "FLUSH_DISK_TIMEOUT", 11: "SLAVE_NOT_AVAILABLE",
	12: "FLUSH_SLAVE_TIMEOUT", 13: "MESSAGE_ILLEGAL", 14: "SERVICE_NOT_AVAILABLE",
	15: "VERSION_NOT_SUPPORTED", 16: "NO_PERMISSION", 17: "TOPIC_NOT_EXIST", 18: "TOPIC_EXIST_ALREADY",
	19: "PULL_NOT_FOUND", 20: "PULL_RETRY_IMMEDIATELY", 21: "PULL_OFFSET_MOVED", 22: "QUERY_NOT_FOUND",
	23: "SUBSCRIPTION_PARSE_FAILED", 24: "SUBSCRIPTION_NOT_EXIST", 25: "SUBSCRIPTION_NOT_LATEST",
	26: "SUBSCRIPTION_GROUP_NOT_EXIST", 27: "FILTER_DATA_NOT_EXIST", 28: "FILTER_DATA_NOT_LATEST",
	29: "INVALID_PARAMETER", 200: "TRANSACTION_SHOULD_COMMIT", 201: "TRANSACTION_SHOULD_ROLLBACK",
	202: "TRANSACTION_STATE_UNKNOW", 203: "TRANSACTION_STATE_GROUP_WRONG", 206: "CONSUMER_NOT_ONLINE",
	207: "CONSUME_MSG_TIMEOUT", 208: "NO_MESSAGE", 501: "NOT_LEADER_FOR_QUEUE", 604: "ILLEGAL_OPERATION",
	-1000: "RPC_UNKNOWN", -1002: "RPC_ADDR_IS_NULL", -1004: "RPC_SEND_TO_CHANNEL_FAILED", -1006: "RPC_TIME_OUT",
}

func TestCodeTablesCoverSpec(t *testing.T) {
	for code, name := range specRequestCodes {
		if got := RequestCode(code).String(); got != name {
			t.Errorf("request code %d: %s, want %s", code, got, name)
		}
	}
	for code, name := range specResponseCodes {
		if got := ResponseCode(code).String(); got != name {
			t.Errorf("response code %d: %s, want %s", code, got, name)
		}
	}
}

func TestCodeNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range requestCodeNames {
		if seen[n] {
			t.Errorf("request name %s twice", n)
		}
		seen[n] = true
	}
	seen = map[string]bool{}
	for _, n := range responseCodeNames {
		if seen[n] {
			t.Errorf("response name %s twice", n)
		}
		seen[n] = true
	}
}

func TestName(t *testing.T) {
	for _, c := range []struct {
		code     int32
		response bool
		want     string
	}{
		{17, false, "UPDATE_AND_CREATE_TOPIC(17)"},
		{17, true, "TOPIC_NOT_EXIST(17)"},
		{105, false, "GET_ROUTEINFO_BY_TOPIC(105)"},
		{-1006, true, "RPC_TIME_OUT(-1006)"},
		{200050, false, "POP_MESSAGE(200050)"},
		{12345, false, "CODE(12345)"},
		{12345, true, "CODE(12345)"},
	} {
		if got := Name(c.code, c.response); got != c.want {
			t.Errorf("Name(%d, %v) = %s, want %s", c.code, c.response, got, c.want)
		}
	}
	if s := RequestCode(9999).String(); s != "RequestCode(9999)" {
		t.Error(s)
	}
	if s := ResponseCode(9999).String(); s != "ResponseCode(9999)" {
		t.Error(s)
	}
	resp := &RemotingCommand{Code: 17, Flag: FlagResponse}
	if resp.CodeName() != "TOPIC_NOT_EXIST(17)" {
		t.Error(resp.CodeName())
	}
}
