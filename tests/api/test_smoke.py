async def test_create_and_list_conversations(client, make_token):
    headers = await make_token("alice")
    created = await client.post("/api/v1/conversations", headers=headers, json={"title": "Hi"})
    assert created.status_code == 201, created.text
    listed = await client.get("/api/v1/conversations", headers=headers)
    assert listed.json()["total"] == 1
    assert listed.json()["items"][0]["title"] == "Hi"


async def test_message_without_stream_returns_the_stored_reply(client, make_token):
    headers = await make_token("alice")
    cid = (await client.post("/api/v1/conversations", headers=headers)).json()["id"]
    reply = await client.post(
        f"/api/v1/conversations/{cid}/message/?stream=false",
        headers=headers,
        data={"content": "hello"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["role"] == "assistant"
    assert reply.json()["status"] == "complete"
    assert len(reply.json()["content"].split()) == 8
    messages = (await client.get(f"/api/v1/conversations/{cid}/messages", headers=headers)).json()
    assert [m["role"] for m in messages["items"]] == ["user", "assistant"]
    assert [m["sequence"] for m in messages["items"]] == [0, 1]
