module rockchip-llama.invalid/testpod

go 1.26
