package command

// Golden frames, byte by byte, with the command each one decodes to. They
// live in a non-test file so the gateway's session tests can replay them.
// The codec tests check decode(RawBytes) == Command for every fixture and
// AppendFrame(Command) == RawBytes for every fixture that is not DecodeOnly.

// Fixture is one golden frame.
type Fixture struct {
	Name     string // serialization/kind/code
	Desc     string // where the bytes come from
	RawBytes []byte
	// Command is what RawBytes decodes to.
	Command RemotingCommand
	// DecodeOnly marks bytes that are valid input but not AppendFrame's
	// canonical output (Java's key order, keys AppendFrame leaves out).
	DecodeOnly bool
}

// Fixtures returns the golden frames, freshly built, so a caller may change
// them.
func Fixtures() []Fixture {
	return []Fixture{
		{
			Name: "json/request/GET_ROUTEINFO_BY_TOPIC",
			Desc: "rocketmq-client-go v2's first name-server request (remoting.md §1.2); " +
				"TestRealGoClient checks that the real client sends these bytes, up to the opaque",
			RawBytes: cat(
				[]byte{0x00, 0x00, 0x00, 0x70}, // length 112 = 4 + 108 header + 0 body
				[]byte{0x00, 0x00, 0x00, 0x6c}, // serialize type 0 (JSON), header length 108
				[]byte(`{"code":105,"language":"GO","version":317,"opaque":1,"flag":0,"remark":"",`+
					`"extFields":{"topic":"TopicTest"}}`), // header; no body
			),
			Command: RemotingCommand{
				Code: int32(GetRouteInfoByTopic), Language: LanguageGo, Version: VersionV4_5_2,
				Opaque: 1, ExtFields: map[string]string{"topic": "TopicTest"}, SerializeType: JSON,
			},
		},
		{
			Name: "json/response/TOPIC_NOT_EXIST",
			Desc: "the name server's answer to the route request above: an error code with a remark",
			RawBytes: cat(
				[]byte{0x00, 0x00, 0x00, 0x99}, // length 153 = 4 + 149 header + 0 body
				[]byte{0x00, 0x00, 0x00, 0x95}, // serialize type 0 (JSON), header length 149
				[]byte(`{"code":17,"language":"JAVA","version":475,"opaque":1,"flag":1,`+ // flag 1: response
					`"remark":"No topic route info in name server for the topic: TopicTest",`+
					`"extFields":{}}`), // header; no body
			),
			Command: RemotingCommand{
				Code: int32(TopicNotExist), Language: LanguageJava, Version: VersionV5_3_1,
				Opaque: 1, Flag: FlagResponse,
				Remark:    "No topic route info in name server for the topic: TopicTest",
				ExtFields: map[string]string{}, SerializeType: JSON,
			},
		},
		{
			Name: "json/request/SEND_MESSAGE_V2",
			Desc: "a Java producer's send with the V2 one-letter keys (remoting.md §4.1) and a body; " +
				"the properties use RocketMQ's separators U+0001 and U+0002, escaped as \\u0001 and \\u0002",
			RawBytes: cat(
				[]byte{0x00, 0x00, 0x01, 0x37}, // length 311 = 4 + 293 header + 14 body
				[]byte{0x00, 0x00, 0x01, 0x25}, // serialize type 0 (JSON), header length 293
				[]byte(`{"code":310,"language":"JAVA","version":479,"opaque":42,"flag":0,"remark":"",`+
					`"extFields":{`+
					`"a":"PG",`+ // producerGroup
					`"b":"TopicTest",`+ // topic
					`"c":"TBW102",`+ // defaultTopic
					`"d":"4",`+ // defaultTopicQueueNums
					`"e":"1",`+ // queueId
					`"f":"0",`+ // sysFlag
					`"g":"1700000000000",`+ // bornTimestamp
					`"h":"0",`+ // flag
					`"i":"TAGS\u0001TagA\u0002KEYS\u0001k1\u0002WAIT\u0001true\u0002",`+ // properties
					`"j":"0",`+ // reconsumeTimes
					`"k":"false",`+ // unitMode
					`"m":"false",`+ // batch
					`"n":"broker-a"`+ // brokerName
					`}}`),
				[]byte("Hello RocketMQ"), // body, 14 bytes
			),
			Command: RemotingCommand{
				Code: int32(SendMessageV2), Language: LanguageJava, Version: VersionV5_3_3, Opaque: 42,
				ExtFields: map[string]string{
					"a": "PG", "b": "TopicTest", "c": "TBW102", "d": "4", "e": "1", "f": "0",
					"g": "1700000000000", "h": "0",
					"i": "TAGS\x01TagA\x02KEYS\x01k1\x02WAIT\x01true\x02",
					"j": "0", "k": "false", "m": "false", "n": "broker-a",
				},
				Body:          []byte("Hello RocketMQ"),
				SerializeType: JSON,
			},
		},
		{
			Name: "json/response/HEART_BEAT",
			Desc: "the broker's reply to a HEART_BEAT: success, no ext fields, empty body",
			RawBytes: cat(
				[]byte{0x00, 0x00, 0x00, 0x5d}, // length 93 = 4 + 89 header + 0 body
				[]byte{0x00, 0x00, 0x00, 0x59}, // serialize type 0 (JSON), header length 89
				[]byte(`{"code":0,"language":"JAVA","version":475,"opaque":3,"flag":1,"remark":"","extFields":{}}`),
			),
			Command: RemotingCommand{
				Code: int32(Success), Language: LanguageJava, Version: VersionV5_3_1, Opaque: 3,
				Flag: FlagResponse, ExtFields: map[string]string{}, SerializeType: JSON,
			},
		},
		{
			Name: "json/request/UPDATE_CONSUMER_OFFSET",
			Desc: "the Go client's \"oneway\" offset commit: flag 0, the oneway bit is never set " +
				"(remoting.md §13 trap 10); the client writes the keys in random order, sorted here",
			RawBytes: cat(
				[]byte{0x00, 0x00, 0x00, 0xba}, // length 186 = 4 + 182 header + 0 body
				[]byte{0x00, 0x00, 0x00, 0xb6}, // serialize type 0 (JSON), header length 182
				[]byte(`{"code":15,"language":"GO","version":317,"opaque":12,"flag":0,"remark":"",`+ // flag 0, not 2
					`"extFields":{"bname":"broker-a","commitOffset":"42","consumerGroup":"CG","queueId":"1","topic":"TopicTest"}}`),
			),
			Command: RemotingCommand{
				Code: int32(UpdateConsumerOffset), Language: LanguageGo, Version: VersionV4_5_2, Opaque: 12,
				ExtFields: map[string]string{
					"bname": "broker-a", "commitOffset": "42", "consumerGroup": "CG", "queueId": "1", "topic": "TopicTest",
				},
				SerializeType: JSON,
			},
		},
		{
			Name: "json/response/SEND_MESSAGE-java-order",
			Desc: "a Java broker's send reply as fastjson writes it: keys sorted, no remark (null), " +
				"serializeTypeCurrentRPC (ignored); valid input, but AppendFrame writes the Go client's order",
			RawBytes: cat(
				[]byte{0x00, 0x00, 0x00, 0xec}, // length 236 = 4 + 232 header + 0 body
				[]byte{0x00, 0x00, 0x00, 0xe8}, // serialize type 0 (JSON), header length 232
				[]byte(`{"code":0,"extFields":{"queueId":"1","queueOffset":"7",`+
					`"msgId":"7F00000100002A9F0000000000000ABC","MSG_REGION":"DefaultRegion","TRACE_ON":"true"},`+
					`"flag":1,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":479}`),
			),
			Command: RemotingCommand{
				Code: int32(Success), Language: LanguageJava, Version: VersionV5_3_3, Opaque: 42, Flag: FlagResponse,
				ExtFields: map[string]string{
					"queueId": "1", "queueOffset": "7", "msgId": "7F00000100002A9F0000000000000ABC",
					"MSG_REGION": "DefaultRegion", "TRACE_ON": "true",
				},
				SerializeType: JSON,
			},
			DecodeOnly: true,
		},
		{
			Name: "rocketmq/request/QUERY_CONSUMER_OFFSET",
			Desc: "a Java consumer started with -Drocketmq.serialize.type=ROCKETMQ asks for its offset",
			RawBytes: []byte{
				0x00, 0x00, 0x00, 0x49, // length 73 = 4 + 69 header + 0 body
				0x01, 0x00, 0x00, 0x45, // serialize type 1 (ROCKETMQ), header length 69 = 21 + 0 remark + 48 ext
				0x00, 0x0e, // code 14 QUERY_CONSUMER_OFFSET
				0x00,       // language 0 JAVA
				0x01, 0xdf, // version 479 (V5_3_3)
				0x00, 0x00, 0x00, 0x07, // opaque 7
				0x00, 0x00, 0x00, 0x00, // flag 0: request
				0x00, 0x00, 0x00, 0x00, // remark length 0
				0x00, 0x00, 0x00, 0x30, // ext fields length 48
				0x00, 0x0d, // key length 13
				'c', 'o', 'n', 's', 'u', 'm', 'e', 'r', 'G', 'r', 'o', 'u', 'p',
				0x00, 0x00, 0x00, 0x02, // value length 2
				'C', 'G',
				0x00, 0x07, // key length 7
				'q', 'u', 'e', 'u', 'e', 'I', 'd',
				0x00, 0x00, 0x00, 0x01, // value length 1
				'0',
				0x00, 0x05, // key length 5
				't', 'o', 'p', 'i', 'c',
				0x00, 0x00, 0x00, 0x02, // value length 2
				'T', '1',
			},
			Command: RemotingCommand{
				Code: int32(QueryConsumerOffset), Language: LanguageJava, Version: VersionV5_3_3, Opaque: 7,
				ExtFields:     map[string]string{"consumerGroup": "CG", "queueId": "0", "topic": "T1"},
				SerializeType: RocketMQ,
			},
		},
		{
			Name: "rocketmq/response/SUCCESS-offset",
			Desc: "the binary response example of remoting.md §1.4: success, one ext field offset=\"0\"",
			RawBytes: []byte{
				0x00, 0x00, 0x00, 0x26, // length 38 = 4 + 34 header + 0 body
				0x01, 0x00, 0x00, 0x22, // serialize type 1 (ROCKETMQ), header length 34 = 21 + 0 + 13
				0x00, 0x00, // code 0 SUCCESS
				0x00,       // language 0 JAVA
				0x01, 0xdb, // version 475 (V5_3_1)
				0x00, 0x00, 0x00, 0x01, // opaque 1
				0x00, 0x00, 0x00, 0x01, // flag 1: response
				0x00, 0x00, 0x00, 0x00, // remark length 0
				0x00, 0x00, 0x00, 0x0d, // ext fields length 13
				0x00, 0x06, // key length 6
				'o', 'f', 'f', 's', 'e', 't',
				0x00, 0x00, 0x00, 0x01, // value length 1
				'0',
			},
			Command: RemotingCommand{
				Code: int32(Success), Language: LanguageJava, Version: VersionV5_3_1, Opaque: 1, Flag: FlagResponse,
				ExtFields: map[string]string{"offset": "0"}, SerializeType: RocketMQ,
			},
		},
		{
			Name: "rocketmq/response/TOPIC_NOT_EXIST",
			Desc: "a binary error reply with a remark and no ext fields",
			RawBytes: cat(
				[]byte{
					0x00, 0x00, 0x00, 0x41, // length 65 = 4 + 61 header + 0 body
					0x01, 0x00, 0x00, 0x3d, // serialize type 1 (ROCKETMQ), header length 61 = 21 + 40 + 0
					0x00, 0x11, // code 17 TOPIC_NOT_EXIST
					0x00,       // language 0 JAVA
					0x01, 0xdf, // version 479 (V5_3_3)
					0x00, 0x00, 0x00, 0x09, // opaque 9
					0x00, 0x00, 0x00, 0x01, // flag 1: response
					0x00, 0x00, 0x00, 0x28, // remark length 40
				},
				[]byte("topic[T9] not exist, apply first please!"), // remark
				[]byte{0x00, 0x00, 0x00, 0x00},                     // ext fields length 0
			),
			Command: RemotingCommand{
				Code: int32(TopicNotExist), Language: LanguageJava, Version: VersionV5_3_3, Opaque: 9, Flag: FlagResponse,
				Remark: "topic[T9] not exist, apply first please!", ExtFields: map[string]string{}, SerializeType: RocketMQ,
			},
		},
		{
			Name: "rocketmq/response/HEART_BEAT",
			Desc: "the smallest binary frame: a 21-byte header with no remark, no ext fields and no body",
			RawBytes: []byte{
				0x00, 0x00, 0x00, 0x19, // length 25 = 4 + 21 header + 0 body
				0x01, 0x00, 0x00, 0x15, // serialize type 1 (ROCKETMQ), header length 21
				0x00, 0x00, // code 0 SUCCESS
				0x00,       // language 0 JAVA
				0x01, 0xdb, // version 475 (V5_3_1)
				0x00, 0x00, 0x00, 0x03, // opaque 3
				0x00, 0x00, 0x00, 0x01, // flag 1: response
				0x00, 0x00, 0x00, 0x00, // remark length 0
				0x00, 0x00, 0x00, 0x00, // ext fields length 0
			},
			Command: RemotingCommand{
				Code: int32(Success), Language: LanguageJava, Version: VersionV5_3_1, Opaque: 3, Flag: FlagResponse,
				ExtFields: map[string]string{}, SerializeType: RocketMQ,
			},
		},
	}
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
