/* Bare-metal start-up for the harness on QEMU's Cortex-M boards: vector table, copy .data,
 * zero .bss, enable the FPU (hard-float builds), set up semihosting (printf, exit) and run
 * main. SysTick counts the processor clock for the instruction counts (see runner.cc). */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __stack_top;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void Reset_Handler(void);
void _init(void);
void _fini(void);
static void Fault_Handler(void);

__attribute__((section(".isr_vector"), used)) static const void* const vectors[16] = {
    &__stack_top, (const void*)Reset_Handler, (const void*)Fault_Handler, (const void*)Fault_Handler,
    (const void*)Fault_Handler, (const void*)Fault_Handler, (const void*)Fault_Handler, 0, 0, 0, 0,
    (const void*)Fault_Handler, (const void*)Fault_Handler, 0, (const void*)Fault_Handler,
    (const void*)Fault_Handler,
};

/* What crti/crtbegin would give (linked with -nostartfiles): C++ static destructors register
 * against __dso_handle; newlib's init/fini arrays call _init/_fini. */
void* __dso_handle = 0;
void _init(void) {}
void _fini(void) {}

static void Fault_Handler(void) {
  /* A fault (e.g. an arena overrun into unmapped memory) ends the run with a failure code. */
  exit(3);
}

void Reset_Handler(void) {
  uint32_t* src = &__etext;
  for (uint32_t* dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
#if defined(__ARM_FP)
  /* CPACR: full access to CP10 and CP11 (the FPU). */
  *(volatile uint32_t*)0xE000ED88u |= (0xFu << 20);
  __asm volatile("dsb\n\tisb");
#endif
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}
